// The ingress page: reads the local API (relative URLs, so it works under any prefix) and
// renders it; no external requests.
"use strict";
const T = JSON.parse(document.getElementById("strings").textContent);
const API = "api/v1/usage-stats/";
const $ = (id) => document.getElementById(id);

function notice(text) { $("notice").textContent = text || ""; }

async function call(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const token = sessionStorage.getItem("printernizer-stats-token");
  if (token) headers["Authorization"] = "Bearer " + token;
  let response = await fetch(API + path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    const entered = window.prompt(T.token_prompt);
    if (entered) {
      sessionStorage.setItem("printernizer-stats-token", entered);
      return call(path, options);
    }
  }
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch (_) { body = text; }
  return { ok: response.ok, status: response.status, body, text };
}

function fill(dl, rows) {
  dl.replaceChildren(...rows.map(([label, value, wide]) => {
    const div = document.createElement("div");
    if (wide) div.className = "wide";
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = label;
    dd.textContent = value;
    div.append(dt, dd);
    return div;
  }));
}

function list(ul) {
  ul.replaceChildren(...ul.dataset.items.split("|").map((item) => {
    const li = document.createElement("li");
    li.textContent = item;
    return li;
  }));
}

function when(text) {
  if (!text) return T.none;
  const d = new Date(text);
  return isNaN(d) ? text : d.toLocaleString(document.documentElement.lang);
}

async function loadLocal() {
  const r = await call("local");
  if (!r.ok) { notice(T.error + ": " + (r.body && r.body.detail || r.status)); return; }
  const s = r.body;
  const box = $("opt-in");
  box.checked = s.sharing_active;
  box.disabled = s.do_not_track;
  $("opt-in-state").textContent = s.do_not_track ? T.dnt : (s.sharing_active ? T.on : T.off);
  $("printernizer-shares").hidden = !s.printernizer_sharing;
  if (s.sharing_active && s.reason && !s.printernizer_sharing) {
    $("opt-in-state").textContent += " " + s.reason;
  }
  $("source").textContent = T.source + ": " + (s.sources.length ? s.sources.join(", ") : T.none) +
    (s.sources.includes("printernizer api") ? " · " + T.bridge_last + ": " + when(s.bridge_last_success) : "");
  const w = s.this_week;
  const decided = w.jobs_completed + w.jobs_failed;
  fill($("week"), [
    [T.jobs, w.job_count],
    [T.success_rate, decided ? Math.round(100 * w.jobs_completed / decided) + " %" : "–"],
    [T.files, w.file_count],
    [T.uploads, w.upload_count],
    [T.errors, w.error_count],
    [T.printers, w.printer_count],
    [T.uptime, w.uptime_hours],
    [T.events_total, s.total_events],
  ]);
  $("next-submission").textContent = when(s.next_submission);
  $("problem").hidden = !s.submission_problem;
  $("submit-now").disabled = !s.sharing_active || !s.submission_configured;
}

async function loadPreview() {
  const r = await call("preview");
  if (!r.ok) return;
  $("preview-raw").textContent = r.text;
  const p = r.body;
  const u = p.usage_stats;
  fill($("preview-summary"), [
    [T.period, when(p.period.start) + " – " + when(p.period.end), true],
    [T.jobs, u.job_count],
    [T.files, u.file_count],
    [T.uploads, u.upload_count],
    [T.errors, Object.values(p.error_summary).reduce((a, b) => a + b, 0)],
    [T.printers, p.printer_fleet.printer_count],
    [T.uptime, u.uptime_hours],
  ]);
}

async function loadHistory() {
  const r = await call("history?days=30");
  if (!r.ok) return;
  const rows = r.body.submissions.map((a) => {
    const tr = document.createElement("tr");
    for (const v of [when(a.attempted_at), when(a.period_start) + " – " + when(a.period_end),
                     a.http_status == null ? "–" : a.http_status,
                     a.outcome + (a.detail ? " (" + a.detail + ")" : "")]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  });
  $("attempts").querySelector("tbody").replaceChildren(...rows);
  $("attempts").hidden = rows.length === 0;
  $("no-attempts").hidden = rows.length > 0;
  $("chart").src = "chart.svg?days=30&t=" + Date.now();
}

async function refresh() {
  await Promise.all([loadLocal(), loadPreview(), loadHistory()]);
}

async function post(path, method = "POST") {
  const r = await call(path, { method });
  const b = r.body || {};
  notice(b.message || b.detail || (r.ok ? "" : T.error + " (" + r.status + ")"));
  await refresh();
  return r;
}

$("opt-in").addEventListener("change", (e) => post(e.target.checked ? "opt-in" : "opt-out"));
$("submit-now").addEventListener("click", () => post("submit"));
$("delete").addEventListener("click", () => $("confirm-delete").showModal());
$("delete-cancel").addEventListener("click", () => $("confirm-delete").close());
$("delete-yes").addEventListener("click", async () => {
  $("confirm-delete").close();
  const r = await post("delete-all", "DELETE");
  if (r.ok) notice(T.deleted.replace("{n}", r.body.deleted_events));
});
list($("collected"));
list($("not-collected"));
refresh();
