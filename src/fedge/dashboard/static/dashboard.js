// fedge dashboard: polls the coordinator's JSON endpoints and draws tables and SVG charts.
// Plain JavaScript, no libraries; every value from the server is set as text, never as HTML.
"use strict";

const POLL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = {
  accuracy: "#2563eb", loss: "#b45309", epsilon: "#7c3aed", limit: "#b91c1c",
  expected: "#cbd5e1", joined: "#60a5fa", survivors: "#15803d",
  received: "#2563eb", direct: "#cbd5e1",
  committed: "#16a34a", abandoned: "#dc2626", running: "#3b82f6", planned: "#9ca3af",
};
const state = { job: null, busy: false, failures: 0 };

// -- small helpers --------------------------------------------------------------------------
function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

function ago(t, now) {
  if (t === null || t === undefined) return "never";
  const s = Math.max(0, now - t);
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

function fmt(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }

function badge(text, cls) { return el("span", { class: `badge ${cls || text}` }, text); }

async function api(path, options) {
  const response = await fetch(path, { credentials: "same-origin", ...(options || {}) });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(`${response.status} ${detail}`);
  }
  return body;
}

// -- charts ---------------------------------------------------------------------------------
function niceTicks(lo, hi, count, integer) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const steps = integer ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10];
  let step = steps.map((m) => m * mag).find((s) => s >= raw) || raw;
  if (integer) step = Math.max(1, Math.round(step));
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function frame(node, xs, yLo, yHi, opts) {
  // Axes, grid and tick labels; returns the x/y scales.
  clear(node);
  const [W, H] = node.getAttribute("viewBox").split(" ").slice(2).map(Number);
  const m = { l: opts.marginLeft || 48, r: 14, t: 12, b: 30 };
  const xLo = Math.min(...xs), xHi = Math.max(...xs);
  const pad = opts.band ? 0.6 : xHi > xLo ? 0 : 1;  // bars stand in bands around their round
  const sx = (x) => m.l + ((x - xLo + pad) / (xHi - xLo + 2 * pad)) * (W - m.l - m.r);
  const sy = (y) => H - m.b - ((y - yLo) / (yHi - yLo || 1)) * (H - m.t - m.b);
  for (const t of niceTicks(yLo, yHi, 4, opts.integer)) {
    node.append(svg("line", { class: "grid", x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t) }));
    node.append(svg("text", { x: m.l - 6, y: sy(t) + 4, "text-anchor": "end" }, opts.yFormat(t)));
  }
  const step = Math.max(1, Math.ceil(xs.length / 12));
  xs.forEach((x, i) => {
    if (i % step === 0 || i === xs.length - 1) {
      node.append(svg("text", { x: sx(x), y: H - m.b + 16, "text-anchor": "middle" }, x));
    }
  });
  node.append(svg("line", { class: "axis", x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }));
  node.append(svg("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: H - m.b }));
  node.append(svg("text", { x: W - m.r, y: H - 4, "text-anchor": "end" }, opts.xLabel || "round"));
  return { sx, sy, W, H, m };
}

function empty(node, message) {
  clear(node);
  const [W, H] = node.getAttribute("viewBox").split(" ").slice(2).map(Number);
  node.append(svg("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, message));
}

function legend(node, items, f) {
  let x = f.m.l + 8;
  for (const [label, color] of items) {
    node.append(svg("rect", { x, y: f.m.t + 2, width: 10, height: 10, fill: color }));
    node.append(svg("text", { x: x + 14, y: f.m.t + 11 }, label));
    x += 22 + label.length * 6.5;
  }
}

function lineChart(node, series, opts) {
  // series: [{label, color, points: [[x, y], ...]}]; opts.limit: a horizontal line.
  const pts = series.flatMap((s) => s.points);
  if (!pts.length) { empty(node, opts.empty || "no committed round yet"); return; }
  const ys = pts.map((p) => p[1]).concat(opts.limit === null || opts.limit === undefined ? [] : [opts.limit]);
  let lo = opts.yMin !== undefined ? opts.yMin : Math.min(...ys);
  let hi = opts.yMax !== undefined ? opts.yMax : Math.max(...ys);
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const f = frame(node, pts.map((p) => p[0]).filter((x, i, a) => a.indexOf(x) === i).sort((a, b) => a - b),
    lo, hi, opts);
  if (opts.limit !== null && opts.limit !== undefined) {
    node.append(svg("line", { x1: f.m.l, x2: f.W - f.m.r, y1: f.sy(opts.limit), y2: f.sy(opts.limit),
      stroke: COLORS.limit, "stroke-dasharray": "6 4", "stroke-width": 1.5, "data-limit": opts.limit }));
    node.append(svg("text", { x: f.W - f.m.r - 4, y: f.sy(opts.limit) - 5, "text-anchor": "end",
      fill: COLORS.limit }, `limit ${opts.yFormat(opts.limit)}`));
  }
  for (const s of series) {
    const d = s.points.map((p) => `${f.sx(p[0]).toFixed(1)},${f.sy(p[1]).toFixed(1)}`).join(" ");
    node.append(svg("polyline", { points: d, fill: "none", stroke: s.color, "stroke-width": 2,
      "data-series": s.label }));
    for (const p of s.points) {
      const dot = svg("circle", { cx: f.sx(p[0]), cy: f.sy(p[1]), r: 3, fill: s.color, "data-point": s.label });
      dot.append(svg("title", {}, `round ${p[0]}: ${opts.yFormat(p[1])}`));
      node.append(dot);
    }
  }
  if (series.length > 1) legend(node, series.map((s) => [s.label, s.color]), f);
}

function barChart(node, rounds, bars, opts) {
  // bars: [{label, color, value: (round) => number}], drawn side by side for every round.
  if (!rounds.length) { empty(node, opts.empty); return; }
  const hi = Math.max(1, ...rounds.flatMap((r) => bars.map((b) => b.value(r))));
  const xs = rounds.map((r) => r.round);
  const f = frame(node, xs, 0, hi * 1.2, { ...opts, band: true });
  const slot = f.sx(Math.min(...xs) + 1) - f.sx(Math.min(...xs));
  const w = Math.min(18, (slot * 0.8) / bars.length);
  for (const r of rounds) {
    bars.forEach((b, i) => {
      const v = b.value(r);
      const x = f.sx(r.round) - (bars.length * w) / 2 + i * w;
      const rect = svg("rect", { x, y: f.sy(v), width: Math.max(w - 1, 1), height: Math.max(f.sy(0) - f.sy(v), 0),
        fill: b.color, "data-bar": b.label });
      rect.append(svg("title", {}, `round ${r.round}: ${b.label} ${opts.yFormat(v)}`));
      node.append(rect);
    });
  }
  legend(node, bars.map((b) => [b.label, b.color]), f);
}

function timeline(node, rounds, now) {
  clear(node);
  const [W] = node.getAttribute("viewBox").split(" ").slice(2).map(Number);
  const started = rounds.filter((r) => r.started_at !== null);
  if (!started.length) { empty(node, "no round has started yet"); return; }
  const t0 = Math.min(...started.map((r) => r.started_at));
  const inFlight = started.some((r) => r.ended_at === null);
  const t1 = Math.max(...started.map((r) => r.ended_at || now), inFlight ? now : 0);
  const l = 20, r = 20, span = Math.max(t1 - t0, 1);
  const sx = (t) => l + ((t - t0) / span) * (W - l - r);
  node.append(svg("line", { class: "axis", x1: l, x2: W - r, y1: 70, y2: 70 }));
  for (const t of niceTicks(0, span, 6)) {
    node.append(svg("line", { class: "axis", x1: sx(t0 + t), x2: sx(t0 + t), y1: 70, y2: 74 }));
    node.append(svg("text", { x: sx(t0 + t), y: 88, "text-anchor": "middle" }, `${t.toFixed(0)} s`));
  }
  for (const rd of started) {
    const kind = ["committed", "abandoned"].includes(rd.state) ? rd.state : "running";
    const x0 = sx(rd.started_at), x1 = sx(rd.ended_at || now);
    const bar = svg("rect", { x: x0, y: 30, width: Math.max(x1 - x0, 3), height: 30, rx: 3,
      fill: COLORS[kind], "data-testid": "round-bar", "data-state": rd.state, "data-round": rd.round });
    const took = ((rd.ended_at || now) - rd.started_at).toFixed(1);
    bar.append(svg("title", {}, `round ${rd.round}: ${rd.state}, ${rd.participants} devices, ${took} s` +
      (rd.reason ? ` (${rd.reason})` : "")));
    node.append(bar);
    if (x1 - x0 > 16) node.append(svg("text", { x: (x0 + x1) / 2, y: 49, "text-anchor": "middle", fill: "#fff" }, rd.round));
  }
  const items = [["committed", COLORS.committed], ["abandoned", COLORS.abandoned], ["in flight", COLORS.running]];
  let x = l;
  for (const [label, color] of items) {
    node.append(svg("rect", { x, y: 8, width: 10, height: 10, fill: color }));
    node.append(svg("text", { x: x + 14, y: 17 }, label));
    x += 90;
  }
  node.append(svg("text", { x: W - r, y: 104, "text-anchor": "end" }, "seconds since the first round opened"));
}

// -- sections -------------------------------------------------------------------------------
function renderFleet(fleet) {
  const cards = $("fleet-cards");
  clear(cards);
  const online = fleet.gateways.filter((g) => g.online).length;
  for (const [value, label, id] of [
    [fleet.sites.length, "sites", "sites"],
    [`${online} / ${fleet.gateways.length}`, "gateways online", "gateways-online"],
    [fleet.online_devices, "devices online (gateways' count)", "devices-online"],
    [fleet.eligible_devices, "devices eligible to train", "devices-eligible"],
    [fleet.devices_total, "devices known to the coordinator", "devices-known"],
  ]) {
    cards.append(el("div", { class: "card", "data-testid": `card-${id}` },
      el("div", { class: "value" }, value), el("div", { class: "label" }, label)));
  }
  const gw = $("gateways").querySelector("tbody");
  clear(gw);
  for (const g of fleet.gateways) {
    gw.append(el("tr", { "data-testid": "gateway-row" },
      el("td", {}, g.site), el("td", { class: "mono" }, g.id),
      el("td", {}, badge(g.online ? "online" : "offline")),
      el("td", { class: "num" }, g.online_devices), el("td", { class: "num" }, g.eligible_devices),
      el("td", {}, ago(g.last_seen, fleet.now))));
  }
  const dev = $("devices").querySelector("tbody");
  clear(dev);
  const hidden = fleet.devices_total - fleet.devices.length;
  $("devices-more").textContent = hidden > 0 ? `the ${fleet.devices.length} seen last; ${hidden} more not listed` : "";
  for (const d of fleet.devices) {
    const status = d.revoked ? "revoked" : d.online ? "online" : "offline";
    dev.append(el("tr", { "data-testid": "device-row" },
      el("td", { class: "mono" }, d.id), el("td", {}, d.site || "–"),
      el("td", { class: "mono" }, d.gateway || "direct"), el("td", {}, badge(status)),
      el("td", { class: "num" }, d.rounds_participated), el("td", {}, ago(d.last_seen, fleet.now))));
  }
}

function renderJobList(jobs) {
  const select = $("job-select");
  $("no-jobs").hidden = jobs.length > 0;
  const ids = jobs.map((j) => j.id);
  if (state.job === null || !ids.includes(state.job)) state.job = ids.length ? ids[ids.length - 1] : null;
  const current = Array.from(select.options).map((o) => o.value);
  if (current.join("\n") !== ids.join("\n")) {
    clear(select);
    for (const j of jobs) select.append(el("option", { value: j.id }, `${j.id} · ${j.task}`));
  }
  if (state.job !== null) select.value = state.job;
}

function renderJob(detail, now) {
  const job = detail.job;
  const head = $("job-state");
  head.className = `badge ${job.state}`;
  head.textContent = job.state;
  $("job-progress").textContent = `${job.rounds_committed} of ${job.rounds_wanted} rounds committed` +
    (detail.secure_aggregation ? " · secure aggregation" : "") +
    (detail.privacy.mode !== "none" ? ` · ${detail.privacy.mode} DP` : "");
  timeline($("timeline"), detail.rounds, now);
  const committed = detail.rounds.filter((r) => r.state === "committed");
  lineChart($("accuracy"), [{ label: "accuracy", color: COLORS.accuracy,
    points: committed.filter((r) => r.accuracy !== null).map((r) => [r.round, r.accuracy]) }],
  { yMin: 0, yMax: 1, yFormat: (v) => v.toFixed(2) });
  lineChart($("loss"), [{ label: "loss", color: COLORS.loss,
    points: committed.filter((r) => r.loss !== null).map((r) => [r.round, r.loss]) }],
  { yMin: 0, yFormat: (v) => v.toFixed(2) });
  renderPrivacy(detail, committed);
  renderSecAgg(detail);
  renderSavings(detail);
  renderModels(detail);
}

function renderPrivacy(detail, committed) {
  const p = detail.privacy;
  const text = $("privacy-text");
  if (p.mode === "none") {
    text.textContent = "— this job adds no differential-privacy noise (no ε to spend)";
    empty($("privacy"), "no differential privacy in this job");
    return;
  }
  const limit = p.limit === null ? "(the job sets no limit)" : `of ${p.limit_kind} ${p.limit.toFixed(2)}`;
  text.textContent = `${fmt(p.spent, 3)} ${limit}`;
  lineChart($("privacy"), [{ label: "ε spent", color: COLORS.epsilon,
    points: committed.filter((r) => r.epsilon !== null).map((r) => [r.round, r.epsilon]) }],
  { yMin: 0, limit: p.limit, yFormat: (v) => v.toFixed(2) });
}

function renderSecAgg(detail) {
  const rounds = detail.rounds.filter((r) => r.secagg !== null);
  const text = $("secagg-text");
  if (!detail.secure_aggregation) {
    text.textContent = "— off for this job";
    empty($("secagg"), "secure aggregation is off for this job");
    return;
  }
  const last = rounds.length ? rounds[rounds.length - 1].secagg : null;
  text.textContent = last ? `(last: ${last.survivors} of ${last.joined} joined survived)` : "";
  barChart($("secagg"), rounds, [
    { label: "handed out", color: COLORS.expected, value: (r) => r.secagg.expected },
    { label: "joined", color: COLORS.joined, value: (r) => r.secagg.joined },
    { label: "survivors", color: COLORS.survivors, value: (r) => r.secagg.survivors },
  ], { empty: "no secure-aggregation session has ended yet", yFormat: (v) => v.toFixed(0), integer: true });
}

function renderSavings(detail) {
  const rounds = detail.rounds.filter((r) => r.received_bytes > 0);
  const text = $("savings-text");
  if (detail.device_direct_bytes > 0) {
    const saved = detail.device_direct_bytes - detail.received_bytes;
    const pct = (100 * saved) / detail.device_direct_bytes;
    text.textContent = `— received ${bytes(detail.received_bytes)} instead of ` +
      `${bytes(detail.device_direct_bytes)}: the gateways saved ${bytes(saved)} (${pct.toFixed(0)} %)`;
  } else {
    text.textContent = "";
  }
  barChart($("savings"), rounds, [
    { label: "device-direct design", color: COLORS.direct, value: (r) => r.device_direct_bytes },
    { label: "received via gateways", color: COLORS.received, value: (r) => r.received_bytes },
  ], { empty: "nothing received yet", yFormat: bytes, marginLeft: 72 });
}

function renderModels(detail) {
  const body = $("models").querySelector("tbody");
  clear(body);
  const hidden = detail.models_total - detail.models.length;
  $("models-more").textContent = hidden > 0 ? `(${hidden} older versions not listed: fedge models list)` : "";
  for (const v of detail.models.slice().reverse()) {
    const actions = el("td", {});
    if (v.status === "production" && v.round !== null) {
      const b = el("button", { class: "danger", "data-testid": "rollback", "data-version": v.version }, "Roll back");
      b.addEventListener("click", () => act(`roll ${detail.job.id} back from ${v.version}`,
        `api/jobs/${encodeURIComponent(detail.job.id)}/rollback`));
      actions.append(b);
    } else if (v.status === "candidate" || v.status === "retired") {
      const b = el("button", { "data-testid": "promote", "data-version": v.version }, "Promote");
      b.addEventListener("click", () => act(`promote ${v.version}`, `api/models/${v.sha256}/promote`));
      actions.append(b);
    }
    body.append(el("tr", { "data-testid": "model-row", "data-version": v.version, "data-status": v.status },
      el("td", { class: "mono" }, v.version), el("td", {}, badge(v.status)),
      el("td", { class: "num" }, fmt(v.metrics.accuracy, 4)), el("td", { class: "num" }, fmt(v.metrics.loss, 4)),
      el("td", {}, v.signed ? "yes" : "no"), el("td", { class: "mono" }, v.sha256.slice(0, 12)),
      el("td", { class: "why" }, v.status_reason), actions));
  }
}

async function act(what, path) {
  if (!window.confirm(`Really ${what}?`)) return;
  const status = $("action-status");
  for (const b of document.querySelectorAll("#models button")) b.disabled = true;
  try {
    const view = await api(path, { method: "POST", headers: { "X-Fedge-Action": "1" } });
    status.className = "ok";
    status.textContent = `done: ${view.version} is now ${view.status}`;
  } catch (err) {
    status.className = "err";
    status.textContent = `refused: ${err.message}`;
  }
  await refresh();
}

// -- polling --------------------------------------------------------------------------------
async function refresh() {
  if (state.busy) return;
  state.busy = true;
  const live = $("live");
  try {
    const [fleet, jobs] = await Promise.all([api("api/fleet"), api("api/jobs")]);
    renderFleet(fleet);
    renderJobList(jobs);
    if (state.job !== null) renderJob(await api(`api/jobs/${encodeURIComponent(state.job)}`), fleet.now);
    state.failures = 0;
    live.className = "live ok";
    live.textContent = `live · updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    state.failures += 1;
    live.className = "live err";
    live.textContent = `cannot reach the coordinator (${err.message}); retrying`;
  } finally {
    state.busy = false;
  }
}

async function start() {
  $("job-select").addEventListener("change", (e) => { state.job = e.target.value; refresh(); });
  try {
    $("who").textContent = `signed in with the ${(await api("api/whoami")).who}`;
  } catch (err) {
    $("who").textContent = `not signed in (${err.message})`;
  }
  await refresh();
  window.setInterval(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
