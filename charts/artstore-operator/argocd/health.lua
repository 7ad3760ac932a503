-- Argo CD health of an artstore.io resource (EventStream, StorageElement, QueryNode, Ingester).
-- Healthy: Ready=True for the current generation. Degraded: Ready=False for a reason that
-- needs a person (a bad spec, a failed Job, no writable storage). Anything else, including a
-- status the operator has not written for the current generation yet: Progressing.
local hs = {}
local degraded = {
  InvalidSpec = true,
  MigrationFailed = true,
  BackfillFailed = true,
  NoWritableTargets = true,
}
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      local message = condition.message or ""
      if condition.reason ~= nil then
        message = condition.reason .. ": " .. message
      end
      if generation ~= nil and condition.observedGeneration ~= nil and condition.observedGeneration < generation then
        hs.status = "Progressing"
        hs.message = "Ready condition is from generation " .. tostring(condition.observedGeneration)
        return hs
      end
      if condition.status == "True" then
        hs.status = "Healthy"
      elseif condition.status == "False" and degraded[condition.reason or ""] then
        hs.status = "Degraded"
      else
        hs.status = "Progressing"
      end
      hs.message = message
      return hs
    end
  end
end
hs.status = "Progressing"
hs.message = "No Ready condition yet"
return hs
