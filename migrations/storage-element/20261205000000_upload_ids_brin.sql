-- Upload ids are recorded in time order and pruned by age: a BRIN index finds the old ones for
-- the prune at a fraction of a B-tree's cost per insert (one insert on every upload through an
-- ingester); a row updated later (an id abandoned) only widens its block range's summary.
DROP INDEX IF EXISTS uploads_recorded_at;
CREATE INDEX uploads_recorded_at ON uploads USING brin (recorded_at);
