// The dashboard page: one EventSource (/stream) keeps it live; views are drawn from what the
// stream and the read APIs (/api/...) say. No framework and nothing fetched from elsewhere.
"use strict";

const S = { fleet: { nodes: [], workloads: [], moves: [] }, rows: {}, events: [], view: "fleet", arg: null,
  history: {}, auth: sessionStorage.getItem("ef-auth") };
const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const EVENTS_KEPT = 500, HOUR = 3600;

function pct(v) { return v == null ? "" : Math.round(v * 100) + "%"; }
function kb(v) { return v == null ? "" : v >= 16 * 1048576 ? Math.round(v / 1048576) + " MB" : Math.round(v / 1024) + " KB"; }
function ago(t) { if (!t) return ""; const s = Date.now() / 1000 - t; return s < 60 ? s.toFixed(0) + " s ago" : (s / 60).toFixed(0) + " min ago"; }
function hhmmss(t) { return new Date(t * 1000).toTimeString().slice(0, 8); }
function power(p) { if (!p) return ""; return p.src + (p.pct != null ? " " + Math.round(p.pct) + "%" : ""); }

// -- the fleet table ----------------------------------------------------------------------------

function nodeCells(n) {
  return `<td><a href="#node/${esc(n.id)}">${esc(n.id)}</a></td><td>${esc(n.board)}</td><td>${esc(n.runtime)}</td>` +
    `<td class="state state-${esc(n.state)}">${esc(n.state)}${n.draining ? " (draining)" : ""}</td><td>${esc(n.fw)}</td>` +
    `<td>${esc(n.slot)}</td><td>${pct(n.cpu)}</td><td>${kb(n.mem_free)}</td><td>${esc(power(n.power))}</td>` +
    `<td class="wl">${esc((n.workloads || []).join(", "))}</td><td>${n.rps == null ? "" : n.rps.toFixed(1)}</td>` +
    `<td class="seen" data-t="${n.last_seen}">${ago(n.last_seen)}</td>`;
}

function putNode(n) {
  // A node's row, redrawn only when what it shows changed; every heartbeat's seq and arrival
  // time are on the row (what tools/bench/dashboard.py times the page by).
  const key = JSON.stringify([n.state, n.draining, n.fw, n.slot, n.cpu, n.mem_free, n.power, n.workloads, n.rps, n.board]);
  let tr = document.querySelector(`#nodes tr[data-node="${CSS.escape(n.id)}"]`);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.node = n.id;
    tr.addEventListener("click", (e) => { if (e.target.tagName !== "A") location.hash = "#node/" + n.id; });
    const body = $("#nodes tbody");
    const after = [...body.children].find((r) => r.dataset.node > n.id);
    body.insertBefore(tr, after || null);
  }
  if (S.rows[n.id] !== key) { tr.innerHTML = nodeCells(n); S.rows[n.id] = key; }
  else { const seen = tr.querySelector(".seen"); seen.dataset.t = n.last_seen; seen.textContent = ago(n.last_seen); }
  if (n.hb_seq != null) { tr.dataset.hbSeq = n.hb_seq; tr.dataset.hbAt = n.hb_at; }
  tr.dataset.state = n.state;
  const i = S.fleet.nodes.findIndex((m) => m.id === n.id);
  if (i >= 0) S.fleet.nodes[i] = Object.assign(S.fleet.nodes[i], n); else S.fleet.nodes.push(n);
}

function drawFleet() {
  const live = new Set(S.fleet.nodes.map((n) => n.id));
  for (const tr of [...document.querySelectorAll("#nodes tr[data-node]")]) if (!live.has(tr.dataset.node)) tr.remove();
  for (const n of S.fleet.nodes) putNode(n);
  const on = S.fleet.nodes.filter((n) => n.state !== "offline").length;
  $("#fleet-summary").textContent = `${S.fleet.nodes.length} nodes, ${on} up; ${S.fleet.workloads.length} workloads; ` +
    `${S.fleet.results_received || 0} results`;
}

// -- plots ----------------------------------------------------------------------------------------

function sparkline(svg, points, t0, t1, max) {
  // points: [[t, v]] with v possibly null (a gap); drawn on a fixed time axis t0..t1.
  const w = 300, h = 60, vals = points.filter((p) => p[1] != null).map((p) => p[1]);
  const top = max || Math.max(1e-9, ...vals);
  let parts = [], cur = [];
  for (const [t, v] of points) {
    if (v == null) { if (cur.length) parts.push(cur); cur = []; continue; }
    cur.push(((t - t0) / (t1 - t0) * w).toFixed(1) + "," + (h - 2 - v / top * (h - 4)).toFixed(1));
  }
  if (cur.length) parts.push(cur);
  svg.innerHTML = parts.map((p) => `<polyline points="${p.join(" ")}"/>`).join("");
}

function bars(svg, values) {
  const w = 300, h = 60, top = Math.max(1e-9, ...values), bw = w / Math.max(1, values.length);
  svg.innerHTML = values.map((v, i) => `<rect x="${(i * bw + 1).toFixed(1)}" y="${(h - v / top * h).toFixed(1)}" ` +
    `width="${(bw - 2).toFixed(1)}" height="${(v / top * h).toFixed(1)}"/>`).join("");
}

function drawHistory(nodeId) {
  const hist = S.history[nodeId] || [], now = Date.now() / 1000;
  const scale = { cpu: 1, battery: 100 };
  for (const key of ["cpu", "mem_free", "battery", "rps"]) {
    sparkline($("#plot-" + key), hist.map((s) => [s.ts, s[key]]), now - HOUR, now, scale[key]);
    const last = [...hist].reverse().find((s) => s[key] != null);
    $("#now-" + key).textContent = !last ? "no data" : key === "cpu" ? pct(last.cpu) : key === "mem_free" ? kb(last.mem_free)
      : key === "battery" ? Math.round(last.battery) + "%" : last.rps.toFixed(2) + "/s";
  }
}

// -- views ----------------------------------------------------------------------------------------

async function api(path, options) {
  const r = await fetch(path, options);
  let body = {};
  try { body = await r.json(); } catch (e) { body = { error: r.statusText }; }
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function showNode(id) {
  $("#node-title").textContent = id;
  const d = await api("/api/node/" + encodeURIComponent(id));
  const n = d.node;
  $("#node-facts").textContent = `${n.board}, ${n.runtime}, ${n.state}; version ${n.fw || "?"} (${n.slot || "no slot"}), ` +
    `boot ${n.boot}; power ${power(n.power)}; workloads: ${(n.workloads || []).join(", ") || "none"}`;
  S.history[id] = d.samples;
  drawHistory(id);
  $("#node-supervision tbody").innerHTML = d.supervision.slice().reverse().map((e) =>
    `<tr class="${esc(e.level)}"><td>${hhmmss(e.ts)}</td><td>${esc(e.kind)}</td><td>${esc(e.msg)}</td></tr>`).join("");
  $("#node-log").textContent = d.log.join("\n");
}

function drawWorkloads() {
  $("#workloads tbody").innerHTML = S.fleet.workloads.map((w) =>
    `<tr data-workload="${esc(w.id)}"><td><a href="#workload/${esc(w.id)}">${esc(w.id)}</a></td><td>${esc(w.model)}</td>` +
    `<td>${w.rate}/s</td><td>${w.nodes.length}/${w.replicas}</td><td class="hosts">${esc(w.nodes.join(", "))}</td>` +
    `<td>${w.results}</td><td>${pct(w.accuracy)}</td><td>${w.mean_us == null ? "" : (w.mean_us / 1000).toFixed(2) + " ms"}</td>` +
    `<td>${esc(w.pending || w.stuck || "")}</td></tr>`).join("");
  $("#moves tbody").innerHTML = S.fleet.moves.map((m) =>
    `<tr><td>${esc(m.workload)}</td><td>${esc(m.from)} → ${esc(m.to)}</td><td>${esc(m.reason)}</td><td>${esc(m.state)}</td></tr>`).join("")
    || "<tr><td>none</td></tr>";
}

async function showWorkload(id) {
  $("#workload-title").textContent = id;
  const d = await api("/api/workload/" + encodeURIComponent(id));
  const w = d.workload, h = d.hour;
  $("#workload-facts").innerHTML = `model ${esc(w.model)}, ${w.rate}/s per replica; replicas run on ` +
    `<span id="workload-hosts">${esc(w.nodes.join(", ") || "no node")}</span>; accuracy ${pct(w.accuracy)}`;
  bars($("#plot-scores"), h.score_hist);
  bars($("#plot-throughput"), h.throughput.per_s);
  $("#workload-latency").textContent = h.latency_us ? `latency over the last hour (${h.results} results): p50 ` +
    `${(h.latency_us.p50 / 1000).toFixed(2)} ms, p95 ${(h.latency_us.p95 / 1000).toFixed(2)} ms, max ` +
    `${(h.latency_us.max / 1000).toFixed(2)} ms` : "no results in the last hour";
  $("#workload-migrations tbody").innerHTML = d.migrations.slice().reverse().map((m) =>
    `<tr class="${m.kind === "move_aborted" ? "warn" : ""}"><td>${hhmmss(m.ts)}</td><td>${esc(m.kind)}</td>` +
    `<td class="move">${esc(m.from)} → ${esc(m.to)}</td><td>${esc(m.reason)}</td><td>${esc(m.msg)}</td></tr>`).join("")
    || "<tr><td>none yet</td></tr>";
  const opts = (ids) => ids.map((i) => `<option>${esc(i)}</option>`).join("");
  $("#move-to").innerHTML = opts(S.fleet.nodes.filter((n) => !w.nodes.includes(n.id) && n.state !== "offline").map((n) => n.id));
  $("#move-from").innerHTML = opts(w.nodes);
}

async function showRollouts() {
  const d = await api("/api/rollouts");
  S.ota = {};
  for (const u of d.updates) S.ota[u.id] = u.nodes;
  S.rollout = d.current;
  drawRollouts();
  drawRollout();
}

function drawRollout() {
  // The deploy or rollback started from this dashboard: its waves, each node's state, the gates' log.
  const r = S.rollout, el = $("#rollout-current");
  if (!r) { el.innerHTML = ""; return; }
  let html = `<h3>${esc(r.kind)} ${esc(r.version || "")} to ${esc(r.group)}: <span id="rollout-status">${esc(r.status)}</span></h3>` +
    `<p>by ${esc(r.who)}, started ${hhmmss(r.started)}${r.ended ? ", ended " + hhmmss(r.ended) : ""}` +
    `${r.error ? ` — <span class="warn">${esc(r.error)}</span>` : ""}</p>`;
  if (r.waves) {
    const p = r.progress;
    html += `<p>wave ${Math.min(Math.max(p.wave, 1), p.waves)}/${p.waves}, ${p.confirmed}/${p.nodes} nodes confirmed, ` +
      `${Math.round(100 * p.bytes / Math.max(1, p.bytes_total))}% sent</p><table id="rollout-waves"><tbody>` +
      r.waves.map((wave, i) => `<tr><td>${i === 0 ? "canary" : "wave " + (i + 1)}</td><td>` +
        wave.map((n) => `${esc(n)}: <b data-rollout-node="${esc(n)}">${esc(r.nodes[n] || "waiting")}</b>` +
          `${r.rolled_back.includes(n) ? " (rolled back)" : ""}`).join(", ") + "</td></tr>").join("") +
      "</tbody></table><pre>" + r.log.map(([t, text]) => `${hhmmss(t)}  ${esc(text)}`).join("\n") + "</pre>";
  }
  if (r.versions) html += "<p>" + Object.entries(r.versions).map(([n, v]) => `${esc(n)} → ${esc(v)}`).join(", ") + "</p>";
  el.innerHTML = html;
}

function drawRollouts() {
  const ids = Object.keys(S.ota || {}).reverse();
  $("#rollouts").innerHTML = ids.map((id) => `<h3>update ${esc(id)}</h3><table><tbody>` +
    Object.entries(S.ota[id]).sort().map(([node, p]) => `<tr><td>${esc(node)}</td><td class="${/revert|reject|abandon|fail/.test(p.state) ? "warn" : ""}">` +
      `${esc(p.state)}</td><td>${esc(p.ver)}</td><td>${p.off} bytes</td><td>${esc(p.err)}</td><td>${hhmmss(p.at)}</td></tr>`).join("") +
    "</tbody></table>").join("") || "<p>No update has reported progress since the controller started.</p>";
}

function eventRow(e) {
  return `<tr class="${esc(e.level)}" data-kind="${esc(e.kind)}"><td>${hhmmss(e.ts)}</td><td>${esc(e.node)}</td>` +
    `<td>${esc(e.level)}</td><td>${esc(e.kind)}</td><td>${esc(e.msg)}</td></tr>`;
}

function eventMatches(e) {
  const node = $("#filter-node").value.trim(), kind = $("#filter-kind").value.trim(), level = $("#filter-level").value;
  return (!node || e.node === node) && (!kind || e.kind.includes(kind)) && (!level || e.level === level);
}

function drawEvents() {
  $("#events tbody").innerHTML = S.events.filter(eventMatches).slice(-300).reverse().map(eventRow).join("");
}

async function loadEvents() {
  // A node named in the filter is asked of the server (its own last events, not only those among
  // the fleet's last few hundred); kind and level filter what came.
  const node = $("#filter-node").value.trim();
  const d = await api("/api/events?limit=" + EVENTS_KEPT + (node ? "&node=" + encodeURIComponent(node) : ""));
  S.events = d.events;
  drawEvents();
}

function route() {
  const [view, ...rest] = (location.hash.slice(1) || "fleet").split("/");
  S.view = view; S.arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  for (const sec of document.querySelectorAll(".view")) sec.hidden = sec.id !== "view-" + view;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.view === view);
  const shown = { node: () => showNode(S.arg), workload: () => showWorkload(S.arg), rollouts: showRollouts,
    events: loadEvents, workloads: async () => drawWorkloads(), fleet: async () => drawFleet() }[view];
  if (shown) shown().catch((e) => say(e.message, true));
}

// -- the live stream --------------------------------------------------------------------------------

function connect() {
  const es = new EventSource("/stream");
  es.onopen = () => { $("#live").textContent = "live"; $("#live").className = "live on"; };
  es.onerror = () => { $("#live").textContent = "reconnecting"; $("#live").className = "live off"; };
  es.addEventListener("fleet", (m) => {
    S.fleet = JSON.parse(m.data);
    drawFleet();
    if (S.view === "workloads") drawWorkloads();
    if (S.view === "workload") {
      const w = S.fleet.workloads.find((x) => x.id === S.arg);
      if (w && $("#workload-hosts")) $("#workload-hosts").textContent = w.nodes.join(", ") || "no node";
    }
  });
  es.addEventListener("node", (m) => {
    const n = JSON.parse(m.data);
    putNode(n);
    if (S.view === "node" && S.arg === n.id && n.hb_at) {
      (S.history[n.id] = S.history[n.id] || []).push({ ts: n.hb_at, cpu: n.cpu, mem_free: n.mem_free,
        battery: n.power && n.power.pct, rps: n.rps });
      const cut = Date.now() / 1000 - HOUR;
      while (S.history[n.id].length && S.history[n.id][0].ts < cut) S.history[n.id].shift();
      drawHistory(n.id);
    }
  });
  es.addEventListener("event", (m) => {
    const e = JSON.parse(m.data);
    S.events.push(e);
    if (S.events.length > EVENTS_KEPT) S.events.shift();
    if (S.view === "events" && eventMatches(e)) $("#events tbody").insertAdjacentHTML("afterbegin", eventRow(e));
    if (S.view === "node" && S.arg === e.node) showNode(S.arg).catch(() => {});
  });
  es.addEventListener("log", (m) => {
    const l = JSON.parse(m.data);
    if (S.view === "node" && S.arg === l.node) {
      const pre = $("#node-log");
      pre.textContent += (pre.textContent ? "\n" : "") + l.lines.join("\n");
      pre.scrollTop = pre.scrollHeight;
    }
  });
  es.addEventListener("ota", (m) => {
    const u = JSON.parse(m.data);
    S.ota = S.ota || {};
    (S.ota[u.id] = S.ota[u.id] || {})[u.node] = u;
    if (S.view === "rollouts") drawRollouts();
  });
  es.addEventListener("rollout", (m) => { S.rollout = JSON.parse(m.data); if (S.view === "rollouts") drawRollout(); });
  es.addEventListener("migration", () => { if (S.view === "workload") showWorkload(S.arg).catch(() => {}); });
}

// -- operator actions ---------------------------------------------------------------------------------

function say(text, refused) {
  const el = $("#action-msg");
  el.textContent = text;
  el.className = refused ? "refused" : "";
}

async function act(op, args, query, body) {
  const headers = { "Content-Type": body ? "application/octet-stream" : "application/json" };
  if (S.auth) headers.Authorization = S.auth;
  try {
    const d = await api("/api/action/" + op + (query || ""), { method: "POST", headers, body: body || JSON.stringify(args) });
    say(d.message || op + " done");
  } catch (e) {
    say(op + " refused: " + e.message, true);
  }
}

function showAuth() {
  const user = S.auth ? atob(S.auth.slice(6)).split(":")[0] : null;
  $("#who").textContent = user ? "operator: " + user : "read-only";
  $("#login-user").hidden = $("#login-pass").hidden = $("#login-btn").hidden = !!user;
  $("#logout-btn").hidden = !user;
}

$("#login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const auth = "Basic " + btoa($("#login-user").value + ":" + $("#login-pass").value);
  try {
    await api("/api/whoami", { headers: { Authorization: auth } });
    S.auth = auth;
    sessionStorage.setItem("ef-auth", auth);
    $("#login-pass").value = "";
    say("signed in");
  } catch (err) {
    say("sign-in refused: " + err.message, true);
  }
  showAuth();
});
$("#logout-btn").addEventListener("click", () => { S.auth = null; sessionStorage.removeItem("ef-auth"); showAuth(); });
$("#drain").addEventListener("click", () => act("drain", { node: S.arg }));
$("#undrain").addEventListener("click", () => act("undrain", { node: S.arg }));
$("#move-form").addEventListener("submit", (e) => {
  e.preventDefault();
  act("move", { workload: S.arg, node: $("#move-to").value, source: $("#move-from").value });
});
$("#deploy-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const file = $("#deploy-file").files[0];
  if (!file) { say("deploy: choose a bundle file first", true); return; }
  act("deploy", null, "?to=" + encodeURIComponent($("#deploy-to").value.trim()), await file.arrayBuffer());
});
$("#rollback-form").addEventListener("submit", (e) => { e.preventDefault(); act("rollback", { to: $("#rollback-to").value.trim() }); });
for (const id of ["#filter-kind", "#filter-level"]) $(id).addEventListener("input", drawEvents);
let refilter = null;
$("#filter-node").addEventListener("input", () => {
  drawEvents();
  clearTimeout(refilter);
  refilter = setTimeout(() => loadEvents().catch(() => {}), 300);
});

window.addEventListener("hashchange", route);
setInterval(() => { for (const td of document.querySelectorAll("#nodes .seen")) td.textContent = ago(+td.dataset.t); }, 1000);
showAuth();
connect();
route();
