// ArtStore console: plain JavaScript against the query node's API (same origin) and the
// ingester's (writes, CORS). No framework, no build step, nothing fetched from elsewhere.
"use strict";

const TOKEN_KEY = "artstore.token";
const $ = (id) => document.getElementById(id);
const state = { config: { ingester_url: "" }, token: null, role: null, sub: null, request: null, cursor: null, current: null };
/// Settles once config.json is read (or failed: the defaults stay); sign-in waits for it.
let configLoaded = Promise.resolve();

// ---- small helpers -------------------------------------------------------------------------

function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch (_) {
    return null;
  }
}

const ROLES = { reader: 1, writer: 2, admin: 3 };
const can = (role) => (ROLES[state.role] || 0) >= ROLES[role];

function formatSize(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? String(v) : v.toFixed(1)) + " " + units[i];
}

function formatDate(text) {
  if (!text) return "";
  const d = new Date(text);
  return isNaN(d) ? text : d.toLocaleString();
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return node;
}

function showError(target, err) {
  const box = $(target);
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err.message || String(err);
  box.hidden = false;
}

/// An API error as the servers write it: `{code, message}`; anything else is described plainly.
async function apiError(response) {
  let text = "";
  try { text = await response.text(); } catch (_) { /* the body is optional */ }
  try {
    const body = JSON.parse(text);
    if (body && body.message) return new Error(`${body.message} (${body.code || response.status})`);
  } catch (_) { /* not JSON */ }
  return new Error(`The server answered ${response.status} ${response.statusText}${text ? ": " + text.slice(0, 200) : ""}`);
}

async function api(base, method, path, body) {
  const headers = { Authorization: "Bearer " + state.token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new Error(`Could not reach ${base || "the query node"}: ${e.message}`);
  }
  if (!response.ok) throw await apiError(response);
  return response.status === 204 ? null : response.json();
}
const query = (method, path, body) => api("", method, path, body);
const ingester = (method, path, body) => api(state.config.ingester_url, method, path, body);

// ---- sign in -------------------------------------------------------------------------------

async function signIn(token) {
  await configLoaded;
  const c = claims(token);
  state.token = token;
  state.role = c && c.role;
  state.sub = c && c.sub;
  // The server decides: a search with the token proves it is valid.
  await query("POST", "/api/v1/search", { limit: 1 });
  sessionStorage.setItem(TOKEN_KEY, token);
  $("sign-in-view").hidden = true;
  $("nav").hidden = false;
  $("whoami").textContent = `${state.sub || "?"} (${state.role || "?"})`;
  $("open-upload").hidden = !can("writer");
  $("nav-admin").hidden = !can("admin");
  show("search");
  await runSearch(null);
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
}

function show(view) {
  for (const v of ["search", "admin"]) {
    $(v + "-view").hidden = v !== view;
    const button = $("nav-" + v);
    if (v === view) button.setAttribute("aria-current", "page"); else button.removeAttribute("aria-current");
  }
  if (view === "admin") loadElements().catch((e) => showError("error", e));
}

// ---- search --------------------------------------------------------------------------------

const list = (text) => text.split(",").map((t) => t.trim()).filter(Boolean);

function buildRequest() {
  const filters = {};
  const v = (id) => $(id).value.trim();
  if (v("f-mime")) filters.mime_type = v("f-mime");
  if (list(v("f-tags-all")).length) filters.tags_all = list(v("f-tags-all"));
  if (list(v("f-tags-any")).length) filters.tags_any = list(v("f-tags-any"));
  if (v("f-size-min")) filters.size_min = Number(v("f-size-min"));
  if (v("f-size-max")) filters.size_max = Number(v("f-size-max"));
  if (v("f-after")) filters.created_after = new Date(v("f-after") + "T00:00:00").toISOString();
  if (v("f-before")) filters.created_before = new Date(v("f-before") + "T00:00:00").toISOString();
  if (v("f-element")) filters.storage_element_id = v("f-element");
  if (v("f-owner")) filters.owner = v("f-owner");
  const request = { filters, limit: Number(v("limit") || 20) };
  if (v("q")) request.query = v("q");
  if (v("sort-field")) {
    request.sort = { field: v("sort-field") };
    if (v("sort-order")) request.sort.order = v("sort-order");
  }
  return request;
}

async function runSearch(cursor) {
  showError("error", null);
  if (!cursor) state.request = buildRequest();
  const body = Object.assign({}, state.request, cursor ? { cursor } : {});
  const page = await query("POST", "/api/v1/search", body);
  state.cursor = page.next_cursor || null;
  const rows = $("results").tBodies[0];
  rows.replaceChildren(...page.results.map((f) => el("tr", { "data-file-id": f.file_id },
    el("td", {}, el("a", { href: "#" + f.file_id, class: "file-link", onclick: (e) => { e.preventDefault(); openDetails(f.file_id).catch((err) => showError("error", err)); } }, f.original_filename)),
    el("td", { class: "num" }, formatSize(f.size)),
    el("td", {}, f.mime_type),
    el("td", {}, ...(f.tags || []).map((t) => el("span", { class: "tag" }, t))),
    el("td", {}, formatDate(f.created_at)),
    el("td", {}, f.storage_element_id))));
  const more = page.total_count_capped ? "more than " : "";
  $("summary").textContent = `${more}${page.total_count} file${page.total_count === 1 ? "" : "s"} found`;
  $("next-page").disabled = !state.cursor;
  $("first-page").disabled = !cursor;
}

// ---- details, download, edit, delete -------------------------------------------------------

async function openDetails(id) {
  showDetails(await query("GET", "/api/v1/files/" + encodeURIComponent(id)));
}

/// Fills the details dialog with a file record (the query node's, or the one a change answered).
function showDetails(f) {
  state.current = f;
  showError("details-error", null);
  $("details-title").textContent = f.original_filename;
  const fields = [["File id", f.file_id], ["Size", `${formatSize(f.size)} (${f.size} bytes)`], ["Type", f.mime_type], ["Description", f.description || ""],
    ["Tags", (f.tags || []).join(", ")], ["Created", formatDate(f.created_at)], ["Created by", f.created_by], ["Updated", formatDate(f.updated_at)],
    ["Storage element", f.storage_element_id], ["Retention", f.retention + (f.retention_expires_at ? " until " + formatDate(f.retention_expires_at) : "")],
    ["SHA-256", f.sha256], ["Version", f.version]];
  $("details-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k }, v)]));
  $("edit-form").hidden = !can("writer");
  $("edit-description").value = f.description || "";
  $("edit-tags").value = (f.tags || []).join(", ");
  $("confirm-delete").hidden = true;
  if (!$("details").open) $("details").showModal();
}

async function download() {
  const f = state.current;
  const response = await fetch(`/api/v1/files/${encodeURIComponent(f.file_id)}/download`, { headers: { Authorization: "Bearer " + state.token } });
  if (!response.ok) throw await apiError(response);
  const url = URL.createObjectURL(await response.blob());
  const a = el("a", { href: url, download: f.original_filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function saveEdit(event) {
  event.preventDefault();
  const f = state.current;
  const description = $("edit-description").value;
  const changed = await ingester("PATCH", "/api/v1/files/" + encodeURIComponent(f.file_id), { description: description.trim() ? description : null, tags: list($("edit-tags").value) });
  // The element's answer is the changed record (the query node's index follows a moment later).
  // Shown only while the dialog is still open: one closed during the save stays closed.
  if ($("details").open && state.current && state.current.file_id === f.file_id) showDetails(changed);
  await runSearch(null);
}

async function confirmDelete() {
  const f = state.current;
  await ingester("DELETE", "/api/v1/files/" + encodeURIComponent(f.file_id));
  $("details").close();
  await runSearch(null);
}

// ---- upload --------------------------------------------------------------------------------

let queued = [];

function queueFiles(files) {
  for (const file of files) {
    const bar = el("progress", { max: "100", value: "0", "aria-label": "Progress of " + file.name });
    const result = el("span", { class: "result" }, "waiting");
    const item = el("li", { "data-name": file.name }, el("span", {}, `${file.name} (${formatSize(file.size)}) `), bar, " ", result);
    $("upload-list").append(item);
    queued.push({ file, bar, result, item });
  }
}

/// XHR rather than fetch: only XHR reports upload progress.
function sendOne(entry, description, tags) {
  return new Promise((resolve) => {
    const form = new FormData();
    if (description) form.append("description", description);
    for (const t of tags) form.append("tags", t);
    form.append("file", entry.file, entry.file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", state.config.ingester_url + "/api/v1/files/upload");
    xhr.setRequestHeader("Authorization", "Bearer " + state.token);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) entry.bar.value = Math.round((100 * e.loaded) / e.total); };
    const done = (ok, text) => {
      entry.result.textContent = text;
      entry.result.className = "result " + (ok ? "ok" : "bad");
      entry.item.dataset.status = ok ? "stored" : "failed";
      resolve();
    };
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* described below */ }
      if (xhr.status >= 200 && xhr.status < 300 && body) {
        entry.bar.value = 100;
        done(true, `stored as ${body.file_id} on ${body.storage_element_id}`);
      } else {
        done(false, body && body.message ? `${body.message} (${body.code})` : `failed: ${xhr.status} ${xhr.statusText}`);
      }
    };
    xhr.onerror = () => done(false, "could not reach the ingester at " + (state.config.ingester_url || "(not configured)"));
    entry.result.textContent = "uploading";
    xhr.send(form);
  });
}

async function startUpload(event) {
  event.preventDefault();
  const description = $("upload-description").value.trim();
  const tags = list($("upload-tags").value);
  const batch = queued;
  queued = [];
  $("upload-files").value = "";
  for (const entry of batch) await sendOne(entry, description, tags);
  await runSearch(null);
}

// ---- admin ---------------------------------------------------------------------------------

// Shows each element's last recorded consistency report; `checkNow` runs a check on every
// element first (it lists every object of each backend, so only when asked).
async function loadElements(checkNow) {
  const answer = await query("GET", checkNow === true ? "/api/v1/elements?check=now" : "/api/v1/elements");
  $("elements").tBodies[0].replaceChildren(...answer.elements.map((e) => {
    const s = e.status, c = e.consistency;
    const used = s ? s.used_bytes : e.used_bytes;
    const checkedAt = c && c.details && c.details.checked_at ? `, checked ${new Date(c.details.checked_at).toLocaleString()}` : "";
    const consistency = c
      ? (c.is_consistent ? "consistent" : `${c.inconsistency_percentage.toFixed(2)}% inconsistent`) + ` (${c.total_attr_files} sidecars, ${c.total_cache_entries} rows${checkedAt})`
      : "no check yet";
    return el("tr", { "data-element-id": e.id },
      el("td", {}, e.id), el("td", {}, s ? s.mode : e.mode), el("td", { class: "num" }, s ? s.priority : e.priority),
      el("td", {}, `${formatSize(used)} / ${formatSize(e.capacity_bytes)}`), el("td", { class: "num" }, s ? s.file_count : ""),
      el("td", {}, e.error ? el("span", { class: "bad" }, e.error) : consistency));
  }));
}

// ---- wiring --------------------------------------------------------------------------------

function guard(fn, target) {
  return (...args) => Promise.resolve().then(() => fn(...args)).catch((e) => showError(target || "error", e));
}

document.addEventListener("DOMContentLoaded", () => {
  // The listeners go on before anything is awaited: a sign-in clicked while config.json loads
  // must reach the page's handler, not submit the form natively (a reload that loses it).
  configLoaded = fetch("config.json")
    .then((r) => (r.ok ? r.json() : null))
    .then((c) => { if (c) state.config = c; })
    .catch(() => { /* the defaults stay */ });
  $("sign-in-form").addEventListener("submit", (e) => { e.preventDefault(); guard(() => signIn($("token").value.trim()))(); });
  $("sign-out").addEventListener("click", signOut);
  $("nav-search").addEventListener("click", () => show("search"));
  $("nav-admin").addEventListener("click", () => show("admin"));
  $("admin-refresh").addEventListener("click", guard(() => loadElements(false)));
  $("admin-check").addEventListener("click", guard(() => loadElements(true)));
  $("search-form").addEventListener("submit", (e) => { e.preventDefault(); guard(() => runSearch(null))(); });
  $("next-page").addEventListener("click", guard(() => runSearch(state.cursor)));
  $("first-page").addEventListener("click", guard(() => runSearch(null)));
  $("download").addEventListener("click", guard(download, "details-error"));
  $("edit-form").addEventListener("submit", guard(saveEdit, "details-error"));
  $("delete").addEventListener("click", () => { $("confirm-delete").hidden = false; $("confirm-delete").focus(); });
  $("confirm-delete").addEventListener("click", guard(confirmDelete, "details-error"));
  $("details-close").addEventListener("click", () => $("details").close());
  $("open-upload").addEventListener("click", () => { $("upload-list").replaceChildren(); queued = []; $("upload").showModal(); });
  $("upload-close").addEventListener("click", () => $("upload").close());
  $("upload-files").addEventListener("change", (e) => queueFiles(e.target.files));
  $("upload-form").addEventListener("submit", guard(startUpload));
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); queueFiles(e.dataTransfer.files); });
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("upload-files").click(); } });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    $("token").value = saved;
    guard(() => signIn(saved))();
  }
});
