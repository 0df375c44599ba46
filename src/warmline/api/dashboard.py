"""The dashboard: one self-contained page over the API (no build step, no CDN).

Live calls, recent handoffs with their context and outcome, the KPIs as
charts over time and per intent, and the SIP ladder of a call or handoff
(click its row; /traces/{id}). The page holds no data itself: it
reads /calls, /handoffs, /kpis and /kpis/daily every few seconds, sending the
API token given in its URL (``/dashboard?token=...``) when the API has one;
which is why api/auth.py lets anyone fetch the page itself.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>warmline</title>
<style>
 body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
 h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
 table { border-collapse: collapse; } td, th { padding: .25em .6em; border-bottom: 1px solid #ddd;
 text-align: left; } .kpi { display: inline-block; margin-right: 2em; }
 .kpi b { display: block; font-size: 1.6em; } svg text { font-size: 11px; }
 tr.pick { cursor: pointer; } tr.pick:hover { background: #eef; }
 #ladder { background: #f6f6f6; padding: .6em; max-height: 24em; overflow: auto; }
 .ok { color: #185; } .bad { color: #b22; font-weight: bold; } #health span { margin-right: 1.2em; }
</style></head><body>
<h1>warmline</h1>
<div id="health"></div>
<label>Intent: <select id="intent"><option value="">all</option></select></label>
<div id="kpis"></div>
<h2>Transfers per day</h2><svg id="chart" width="640" height="180"></svg>
<h2>By intent (last 31 days)</h2><table id="intents"><tr><th>intent</th><th>calls</th>
<th>transfer share</th><th>first-call resolution</th><th>CSAT escalated / AI-only</th>
<th>first word p50 (s)</th><th>repeat 48 h</th></tr></table>
<svg id="intent-chart" width="640" height="40"></svg>
<h2>Live calls</h2><table id="calls"><tr><th>call</th><th>from</th><th>state</th>
<th>duration</th></tr></table>
<h2>Recent handoffs</h2><table id="handoffs"><tr><th>handoff</th><th>status</th>
<th>to</th><th>answered by</th><th>wait (s)</th><th>intent</th><th>reason</th><th>summary</th>
</tr></table>
<h2>Outcome by destination</h2><table id="destinations"><tr><th>destination</th>
<th>handoffs</th><th>connected</th><th>mean wait (s)</th></tr></table>
<h2>SIP ladder <small id="ladder-of">(click a call or a handoff)</small></h2>
<pre id="ladder"></pre>
<script>
const token = new URLSearchParams(location.search).get("token");
const headers = token ? {Authorization: "Bearer " + token} : {};
const get = (path) => fetch(path, {headers}).then(r => r.ok ? r.json() : null);
const text = (value) => document.createTextNode(value == null ? "" : String(value));
function row(table, cells, id, onPick) {
  const tr = document.createElement("tr"); if (id) tr.id = id;
  if (onPick) { tr.className = "pick"; tr.addEventListener("click", onPick); }
  for (const cell of cells) { const td = document.createElement("td");
    td.appendChild(text(cell)); tr.appendChild(td); }
  table.appendChild(tr);
}
function clear(table) { while (table.rows.length > 1) table.deleteRow(1); }
function kpiBox(label, value) {
  const div = document.createElement("div"); div.className = "kpi";
  const b = document.createElement("b"); b.appendChild(text(value ?? "-"));
  div.appendChild(b); div.appendChild(text(label)); return div;
}
function svgEl(name, attrs, content) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  if (content !== undefined) el.textContent = content;
  return el;
}
function chart(days) {  // calls (light) and transfers (dark) per day, with a y axis and values
  const svg = document.getElementById("chart"); svg.innerHTML = "";
  const max = Math.max(1, ...days.map(d => d.calls));
  const left = 40, top = 36, bottom = 150, plot = 640 - left;
  const width = plot / Math.max(days.length, 1);
  svg.appendChild(svgEl("line", {x1: left, y1: top, x2: left, y2: bottom, stroke: "#888"}));
  svg.appendChild(svgEl("line", {x1: left, y1: bottom, x2: 640, y2: bottom, stroke: "#888"}));
  for (const tick of [...new Set([0, Math.round(max / 2), max])]) {
    const y = bottom - (bottom - top) * tick / max;
    svg.appendChild(svgEl("text", {x: left - 6, y: y + 4, "text-anchor": "end"}, tick));
  }
  svg.appendChild(svgEl("text", {x: 0, y: 12}, "calls"));
  days.forEach((d, i) => {
    const x = left + i * width + 4;
    for (const [value, colour] of [[d.calls, "#bcd"], [d.transfers, "#27a"]]) {
      const h = (bottom - top) * value / max;
      svg.appendChild(svgEl("rect", {x, y: bottom - h, width: width - 8, height: h,
                                     fill: colour}));
    }
    svg.appendChild(svgEl("text", {x, y: bottom - (bottom - top) * d.calls / max - 4,
                                   class: "value"}, d.transfers + "/" + d.calls));
    svg.appendChild(svgEl("text", {x, y: 170}, d.day.slice(5)));
  });
  svg.appendChild(svgEl("rect", {x: 300, y: 4, width: 10, height: 10, fill: "#bcd"}));
  svg.appendChild(svgEl("text", {x: 314, y: 13}, "calls"));
  svg.appendChild(svgEl("rect", {x: 360, y: 4, width: 10, height: 10, fill: "#27a"}));
  svg.appendChild(svgEl("text", {x: 374, y: 13}, "transfers (labels: transfers/calls)"));
}
function intentChart(byIntent) {  // transfer share per intent, one labelled bar each
  const svg = document.getElementById("intent-chart"); svg.innerHTML = "";
  const rows = Object.entries(byIntent);
  svg.setAttribute("height", String(20 + rows.length * 22));
  rows.forEach(([name, k], i) => {
    const y = 4 + i * 22, share = k.transfer_share || 0;
    svg.appendChild(svgEl("text", {x: 0, y: y + 13}, name));
    svg.appendChild(svgEl("rect", {x: 140, y, width: 1 + 400 * share, height: 16,
                                   fill: "#27a"}));
    svg.appendChild(svgEl("text", {x: 146 + 400 * share, y: y + 13, class: "value"},
                          percent(share) + " of " + k.calls + " calls transferred"));
  });
}
function intents(byIntent) {
  const table = document.getElementById("intents"); clear(table);
  for (const [name, k] of Object.entries(byIntent))
    row(table, [name, k.calls, percent(k.transfer_share), percent(k.first_call_resolution),
                (k.csat_escalated ?? "-") + " / " + (k.csat_ai_only ?? "-"),
                k.trigger_to_first_word_p50 ?? "-", percent(k.repeat_contact_48h)],
        "intent-" + name);
  intentChart(byIntent);
}
async function showLadder(id) {  // the SIP messages of a call or handoff, with timings
  const pre = document.getElementById("ladder");
  document.getElementById("ladder-of").textContent = "of " + id;
  const trace = await get("/traces/" + encodeURIComponent(id));
  if (!trace) { pre.textContent = "no SIP trace for " + id; return; }
  pre.textContent = trace.messages.map(m => m.offset_s.toFixed(3).padStart(8) + " s  " +
    m.peer.padStart(21) + (m.direction === "in" ? "  --" + m.summary + "-->  warmline"
                                                : "  <--" + m.summary + "--  warmline"))
    .join("\\n") || "(no messages)";
  pre.dataset.call = trace.call_id;
}
function duration(startedAt) {  // Unix seconds -> "m:ss" until now
  const seconds = Math.max(0, Math.round(Date.now() / 1000 - startedAt));
  return Math.floor(seconds / 60) + ":" + String(seconds % 60).padStart(2, "0");
}
async function health() {  // /readyz answers 503 with its checks when not ready
  const box = document.getElementById("health"); box.innerHTML = "";
  const ready = await fetch("/readyz").then(r => r.json()).catch(() => null);
  const trunks = await get("/trunks");
  const items = Object.entries((ready || {}).checks || {"engine": false})
    .map(([name, ok]) => [name, ok ? "ok" : "failing", ok]);
  for (const t of trunks || [])
    items.push(["trunk " + t.name, t.state, !["failed"].includes(t.state)]);
  for (const [name, state, ok] of items) {
    const span = document.createElement("span"); span.className = ok ? "ok" : "bad";
    span.appendChild(text(name + ": " + state)); box.appendChild(span); }
}
function byDestination(handoffs) {
  const groups = {};
  for (const h of handoffs) {
    const g = groups[h.to] = groups[h.to] || {count: 0, connected: 0, waits: []};
    g.count += 1;
    if (h.answered_by) g.connected += 1;
    if (h.wait_s != null) g.waits.push(h.wait_s);
  }
  const table = document.getElementById("destinations"); clear(table);
  for (const [to, g] of Object.entries(groups)) {
    const mean = g.waits.length ? (g.waits.reduce((a, b) => a + b, 0) / g.waits.length)
      .toFixed(1) : "-";
    row(table, [to, g.count, percent(g.connected / g.count), mean]);
  }
}
function percent(share) {  // a share 0..1 as "40%"; none reported: "no data"
  return share === null || share === undefined ? "no data" : Math.round(share * 100) + "%";
}
async function refresh() {
  const intent = document.getElementById("intent").value;
  const [calls, handoffs, kpis, daily] = await Promise.all([
    get("/calls"), get("/handoffs?limit=50"), get("/kpis?days=31"),
    get("/kpis/daily?days=14" + (intent ? "&intent=" + encodeURIComponent(intent) : ""))]);
  const select = document.getElementById("intent");
  for (const name of Object.keys((kpis || {}).by_intent || {}))
    if (![...select.options].some(o => o.value === name)) {
      const o = document.createElement("option"); o.value = name; o.textContent = name;
      select.appendChild(o); }
  const figures = kpis ? (intent ? (kpis.by_intent[intent] || {}) : kpis.overall) : {};
  const box = document.getElementById("kpis"); box.innerHTML = "";
  box.appendChild(kpiBox("transfer share", percent(figures.transfer_share)));
  box.appendChild(kpiBox("CSAT escalated / AI-only",
    (figures.csat_escalated ?? "-") + " / " + (figures.csat_ai_only ?? "-")));
  box.appendChild(kpiBox("first-call resolution", percent(figures.first_call_resolution)));
  box.appendChild(kpiBox("trigger to first word p50 / p90 (s)",
    (figures.trigger_to_first_word_p50 ?? "-") + " / " +
    (figures.trigger_to_first_word_p90 ?? "-")));
  box.appendChild(kpiBox("repeat contact 48 h", percent(figures.repeat_contact_48h)));
  if (!intent) box.appendChild(kpiBox("callbacks kept",
    percent(figures.callback_kept_share) + " (" + (figures.callbacks_kept ?? 0) + " of " +
    (figures.callbacks_promised ?? 0) + ")"));
  const table = document.getElementById("calls"); clear(table);
  for (const c of (calls || []).filter(c => c.state !== "ended"))
    row(table, [c.id, c.from, c.state, duration(c.started_at)], "call-" + c.id,
        () => showLadder(c.id));
  const list = document.getElementById("handoffs"); clear(list);
  const shown = (handoffs || []).filter(h => !intent || h.intent === intent);
  for (const h of shown)
    row(list, [h.id, h.status, h.to, h.answered_by, h.wait_s, h.intent, h.reason, h.summary],
        "handoff-" + h.id, () => showLadder(h.id));
  byDestination(shown);
  intents((kpis || {}).by_intent || {});
  await health();
  chart(daily || []);
  document.body.dataset.refreshed = String(Date.now());
}
document.getElementById("intent").addEventListener("change", refresh);
refresh(); setInterval(refresh, 2000);
</script></body></html>
"""

router = APIRouter()


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard() -> str:
    return PAGE
