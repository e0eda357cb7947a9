// The operator console: plain JavaScript, no build step. It talks the gateway protocol
// (docs/protocol.md) over one WebSocket to the server that served this page, logs on with an
// admin key signed in the page (WebCrypto: Ed25519 or HMAC-SHA256; the secret never leaves the
// page), subscribes to each market's ticker and liquidations, and polls the admin queries.
// Integers that can exceed 2^53 (ts_ns) are sent as raw digits (BigInt) and only displayed.
"use strict";

const POLL_MS = 1000;
const RECONNECT_MS = 1000;
const $ = (id) => document.getElementById(id);
const state = {
  ws: null, nextId: 1, waiting: new Map(), serverTs: null, helloAt: 0,
  markets: [], overview: new Map(), tickers: new Map(), params: new Map(),
  fund: new Map(), fundSeq: 0, tickSize: new Map(), liqs: [], audit: [], seq: 0, pendingTiers: null,
};

// ---- wire helpers ------------------------------------------------------------------------------
function encode(obj) {  // JSON with BigInt values as bare integers
  return JSON.stringify(obj, (k, v) => (typeof v === "bigint" ? "#BIG#" + v.toString() : v))
    .replace(/"#BIG#(-?\d+)"/g, "$1");
}

class GatewayError extends Error {
  constructor(err) {
    super(err.msg);
    this.code = err.code; this.engineCode = err.engine_code; this.field = err.field; this.whatIf = err.what_if;
  }
}

function call(method, params) {
  const id = state.nextId++;
  return new Promise((resolve, reject) => {
    state.waiting.set(id, { resolve, reject });
    state.ws.send(encode({ id, method, params: params || {} }));
  });
}

function hexToBytes(hex) {
  if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new Error("the secret must be hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}
const bytesToHex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, "0")).join("");

async function sign(kind, secretHex, payload) {
  const data = new TextEncoder().encode(payload);
  const secret = hexToBytes(secretHex);
  if (kind === "hmac") {
    const k = await crypto.subtle.importKey("raw", secret, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return bytesToHex(await crypto.subtle.sign("HMAC", k, data));
  }
  if (secret.length !== 32) throw new Error("an Ed25519 private key is 32 bytes (64 hex digits)");
  // PKCS#8 wrapping of a raw Ed25519 private key (RFC 8410): a fixed 16-byte prefix
  const pkcs8 = new Uint8Array([...hexToBytes("302e020100300506032b657004220420"), ...secret]);
  const k = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, false, ["sign"]);
  return bytesToHex(await crypto.subtle.sign({ name: "Ed25519" }, k, data));
}

function serverNowNs() {  // the server's clock (from hello) advanced by this page's monotonic clock
  const elapsedMs = performance.now() - state.helloAt;
  return state.serverTs + BigInt(Math.round(elapsedMs * 1e6));
}

function nonce() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return bytesToHex(b);
}

// ---- formatting -------------------------------------------------------------------------------
const usd = (micro) => (micro === null || micro === undefined) ? "–" :
  (micro < 0 ? "-$" : "$") + (Math.abs(micro) / 1e6).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const ppb = (v) => `${v} ppb (${(v / 1e7).toFixed(5)}%)`;
const utc = (ns) => ns ? new Date(Number(BigInt(ns) / 1000000n)).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–";
const nsOf = (v) => typeof v === "bigint" ? v : BigInt(Math.round(v));

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// ---- connection and logon ---------------------------------------------------------------------
function connect() {
  return new Promise((resolve, reject) => {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/";
    const ws = new WebSocket(url);
    state.ws = ws;
    ws.onmessage = (ev) => onFrame(ev.data, resolve);
    ws.onerror = () => reject(new Error("could not connect to " + url));
    ws.onclose = (ev) => {
      if (state.ws !== ws) return;
      $("conn-status").textContent = `disconnected (${ev.code}${ev.reason ? " " + ev.reason : ""})` +
        (state.cred ? ", reconnecting" : "");
      $("conn-status").classList.remove("live");
      for (const w of state.waiting.values()) w.reject(new Error("connection lost"));
      state.waiting.clear();
      reject(new Error("could not connect to " + url));
      reconnectSoon();
    };
  });
}

function onFrame(text, onHello) {
  const msg = JSON.parse(text);
  if (msg.channel === "hello") {
    // the exact digits of server_ts_ns are not needed: the logon window is seconds wide
    state.serverTs = BigInt(Math.round(msg.data.server_ts_ns / 1e6)) * 1000000n;
    state.helloAt = performance.now();
    onHello();
    return;
  }
  if (msg.channel) return onPush(msg);
  const w = state.waiting.get(msg.id);
  if (!w) return;
  state.waiting.delete(msg.id);
  if (msg.ok) w.resolve(msg.result); else w.reject(new GatewayError(msg.error));
}

async function logon(ev) {
  ev.preventDefault();
  $("logon-error").textContent = "";
  let kind = $("logon-kind").value, key = $("logon-key").value.trim(), secret = $("logon-secret").value.trim();
  const cred = $("logon-credential").value.trim();
  try {
    if (cred) {
      const c = JSON.parse(cred);
      kind = c.kind; key = c.key; secret = c.secret_hex;
    }
    if (!key || !secret) throw new Error("a key and its secret are needed");
    await session({ kind, key, secret });
    state.cred = { kind, key, secret };  // kept in this page only, to log on again after a reconnect
    $("logon-panel").hidden = true;
    $("console").hidden = false;
    await start();
  } catch (e) {
    $("logon-error").textContent = e.code ? `${e.code}: ${e.message}` : e.message;
  }
}

async function session(c) {  // connect (if needed) and log on with an admin key
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) await connect();
  const ts = serverNowNs(), n = nonce();
  const signature = await sign(c.kind, c.secret, `perp-logon/v1\n${c.key}\n${ts}\n${n}`);
  const res = await call("logon", { key: c.key, ts_ns: ts, nonce: n, signature, version: 1 });
  if (!res.permissions.includes("admin")) throw new Error(`key ${c.key} has no admin permission (${res.permissions.join(",")})`);
  $("whoami").textContent = `${res.key} · account ${res.account}`;
  $("conn-status").textContent = "live";
  $("conn-status").classList.add("live");
}

function reconnectSoon() {  // after a lost connection (a restarted server): log on again, resubscribe
  if (!state.cred || state.reconnecting) return;
  state.reconnecting = true;
  setTimeout(async () => {
    try {
      await session(state.cred);
      state.reconnecting = false;
      await start(true);
    } catch (e) {
      state.reconnecting = false;
      $("conn-status").textContent = `reconnecting (${e.code ? e.code + " " : ""}${e.message})`;
      if (!e.code || e.code >= 4900) reconnectSoon();  // a refused key (41xx) is not retried
    }
  }, RECONNECT_MS);
}

// ---- live data --------------------------------------------------------------------------------
async function start(resume = false) {  // resume: after a reconnect, the forms keep what is typed in them
  const ov = await call("admin.overview");
  if (!resume) {
    state.markets = ov.markets.map((m) => m.market);
    for (const spec of (await call("query.markets")).markets) state.tickSize.set(spec.symbol, String(spec.tick_size_usd));
    for (const sel of document.querySelectorAll(".market-select")) {
      sel.replaceChildren(...state.markets.map((m) => el("option", { value: m }, m)));
    }
  }
  applyOverview(ov);
  for (const m of state.markets) {
    await call("subscribe", { channel: "ticker", market: m });
    await call("subscribe", { channel: "liquidations", market: m });
  }
  await loadParams($("tiers-market").value, !resume);
  if (!resume) fillFunding();
  if (!state.polling) poll();
}

async function poll() {
  state.polling = true;
  try {
    const [ov, fund, risk] = await Promise.all([
      call("admin.overview"), call("admin.fund_history", { since_seq: state.fundSeq, limit: 20000 }),
      call("admin.accounts_at_risk", { limit: 10 })]);
    applyOverview(ov);
    applyFund(fund);
    renderAtRisk(risk);
    await refreshAudit();
    await loadParams($("tiers-market").value, false);
  } catch (e) {
    if (state.ws.readyState !== WebSocket.OPEN) {
      state.polling = false;  // start() polls again once the page has logged on again
      return;
    }
  }
  setTimeout(poll, POLL_MS);
}

function onPush(msg) {
  if (msg.channel === "ticker") {
    state.tickers.set(msg.market, msg.data);
    renderMarkets();
  } else if (msg.channel === "liquidations") {
    for (const s of msg.data) state.liqs.unshift({ market: msg.market, ts_ns: msg.ts_ns, ...s });
    state.liqs.length = Math.min(state.liqs.length, 200);
    renderLiqs();
  }
}

function applyOverview(ov) {
  state.seq = ov.seq;
  $("seq").textContent = `seq ${ov.seq}`;
  for (const m of ov.markets) state.overview.set(m.market, m);
  renderMarkets();
}

const VALIDITY_CLASS = { fresh: "good", aging: "warn", revised: "warn", stale: "bad", suppressed: "bad",
  diverged: "bad", too_volatile: "bad", non_positive: "bad" };
const STATUS = ["active", "post_only", "cancel_only", "reduce_only", "halted"];

function renderMarkets() {
  const body = $("markets").tBodies[0];
  body.replaceChildren(...state.markets.map((sym) => {
    const o = state.overview.get(sym) || {}, t = state.tickers.get(sym) || {};
    // the ticker push is the freshest for what it carries (the fix with its vintage too); the overview
    // adds cap, validity and samples
    const mark = t.mark ?? o.mark, index = t.index ?? o.index, oi = t.open_interest_lots ?? o.open_interest_lots;
    const fix = "fix_price" in t ? t : o;
    const soFar = t.predicted_funding_rate_ppb ?? o.funding_so_far_ppb;
    const validity = o.oracle_validity || "–";
    const tr = el("tr", { "data-market": sym },
      el("td", {}, sym), el("td", {}, STATUS[o.status] ?? o.status ?? "–"),
      el("td", { "data-col": "mark" }, mark ?? "–"), el("td", { "data-col": "index" }, index ?? "–"),
      el("td", { "data-col": "fix" }, fixText(fix)),
      el("td", { "data-col": "validity", class: VALIDITY_CLASS[validity] || "" }, validity + (o.funding_frozen ? " · funding frozen" : "")),
      el("td", { "data-col": "funding" }, soFar === undefined ? "–" : ppb(soFar)),
      el("td", { "data-col": "predicted" }, o.funding_predicted_ppb === undefined ? "–" : ppb(o.funding_predicted_ppb)),
      el("td", { "data-col": "cap" }, o.funding_cap_ppb === undefined ? "–" : ppb(o.funding_cap_ppb)),
      el("td", { "data-col": "next-funding" }, utc(o.next_funding_ts_ns)),
      el("td", { "data-col": "oi" }, oi ?? "–"));
    return tr;
  }));
}

// "2.1432 · 2026-11-30 · final": the last usable fix, its UTC date and the vintage the oracle holds
function fixText(f) {
  if (!f.fix_price) return "–";
  return [f.fix_price, f.fix_date, f.fix_vintage].filter((x) => x).join(" · ");
}

function applyFund(res) {
  for (const f of res.funds) {
    const cur = state.fund.get(f.fund) || { points: [] };
    cur.points = cur.points.concat(f.points).slice(-20000);
    Object.assign(cur, { fund: f.fund, markets: f.markets, floor: f.floor_micro, cash: f.cash_micro, equity: f.equity_micro });
    state.fund.set(f.fund, cur);
  }
  state.fundSeq = res.seq;
  renderFund();
}

function renderFund() {
  const funds = [...state.fund.values()];
  $("fund-figures").replaceChildren(...funds.map((f) => el("div", { "data-fund": f.fund },
    `fund account ${f.fund} (${f.markets.join(", ")}): equity `, el("b", { "data-col": "fund-equity" }, usd(f.equity)),
    " · cash ", el("span", { "data-col": "fund-cash" }, usd(f.cash)),
    " · floor ", el("span", { "data-col": "fund-floor" }, usd(f.floor)),
    f.equity < f.floor ? el("span", { class: "bad" }, " BELOW FLOOR (losses go to ADL)") : "")));
  drawChart($("fund-chart"), funds[0]);
}

function drawChart(svg, f) {
  const NS = "http://www.w3.org/2000/svg", W = 600, H = 220, L = 70, R = 10, T = 10, B = 24;
  svg.replaceChildren();
  if (!f || !f.points.length) return;
  const pts = f.points.map(([seq, ts, cash, equity]) => ({ t: Number(ts) / 1e9, cash, equity }));
  const now = pts[pts.length - 1];
  if (pts.length === 1) pts.unshift({ ...now, t: now.t - 1 });
  const t0 = pts[0].t, t1 = Math.max(now.t, t0 + 1);
  const values = pts.flatMap((p) => [p.cash, p.equity]).concat([f.floor]);
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi === lo) { hi += 1e6; lo -= 1e6; }
  const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  const y = (v) => T + (H - T - B) * (hi - v) / (hi - lo);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  for (const v of [lo + pad, (lo + hi) / 2, hi - pad]) {
    add("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e6eb" });
    add("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end", "font-size": 10, fill: "#555" }, usd(Math.round(v)));
  }
  add("text", { x: L, y: H - 6, "font-size": 10, fill: "#555" }, utc(BigInt(Math.round(t0 * 1e3)) * 1000000n));
  add("text", { x: W - R, y: H - 6, "font-size": 10, fill: "#555", "text-anchor": "end" }, utc(BigInt(Math.round(t1 * 1e3)) * 1000000n));
  const step = (key) => pts.map((p, i) => (i ? `H${x(p.t).toFixed(1)}V${y(p[key]).toFixed(1)}` : `M${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`)).join("") + `H${x(t1).toFixed(1)}`;
  add("line", { x1: L, x2: W - R, y1: y(f.floor), y2: y(f.floor), stroke: "#b00020", "stroke-dasharray": "5 4", id: "fund-floor-line" });
  add("path", { d: step("cash"), fill: "none", stroke: "#8a8f99", "stroke-width": 1.2 });
  add("path", { d: step("equity"), fill: "none", stroke: "#2455c3", "stroke-width": 2, id: "fund-equity-line" });
}

function renderAtRisk(res) {
  $("at-risk").tBodies[0].replaceChildren(...res.accounts.map((a) => el("tr", { "data-account": a.account },
    el("td", {}, a.account),
    el("td", { class: a.margin_ratio_ppm === null || a.margin_ratio_ppm >= 1e6 ? "bad" : a.margin_ratio_ppm >= 8e5 ? "warn" : "" },
      a.margin_ratio_ppm === null ? "bankrupt" : (a.margin_ratio_ppm / 1e4).toFixed(2) + "%"),
    el("td", {}, usd(a.equity_micro)), el("td", {}, usd(a.maintenance_margin_micro)),
    el("td", { class: "text" }, a.positions.map((p) => `${p.market} ${p.lots > 0 ? "+" : ""}${p.lots} (liq. ${p.liquidation_price ?? "–"})`).join("; ")))));
}

function priceOf(market, ticks) {  // ticks to the decimal price string of the market's grid
  const tick = state.tickSize.get(market);
  if (!ticks) return "–";
  if (!tick) return `${ticks} ticks`;
  const decimals = (tick.split(".")[1] || "").length;
  const scaled = BigInt(ticks) * BigInt(tick.replace(".", ""));
  const digits = scaled.toString().padStart(decimals + 1, "0");
  return decimals ? `${digits.slice(0, -decimals)}.${digits.slice(-decimals)}` : digits;
}

function renderLiqs() {
  $("liq-feed").replaceChildren(...state.liqs.map((s) => el("li", { class: s.phase.startsWith("adl") ? "warn" : "" },
    `${utc(s.ts_ns)} ${s.market} seq ${s.seq}: ${s.phase} ${s.side} ${s.lots} lots at ${priceOf(s.market, s.price_ticks)} (filled ${s.filled})`)));
}

async function refreshAudit() {
  const res = await call("admin.audit_log", {});
  state.audit = res.entries;
  $("audit").tBodies[0].replaceChildren(...res.entries.slice().reverse().map((e) => el("tr", { "data-seq": e.seq },
    el("td", {}, e.seq), el("td", {}, utc(e.ts_ns)), el("td", {}, e.operator), el("td", {}, e.command),
    el("td", {}, e.market ?? "all"), el("td", {}, e.field), el("td", { class: "text" }, auditValue(e.field, e.old)),
    el("td", { class: "text" }, auditValue(e.field, e.new)),
    el("td", {}, utc(e.effective_ts_ns)), el("td", { class: "text" }, e.reason))));
}

function auditValue(field, text) {  // tier lists (JSON in the audit log) in the form's notation
  if (field !== "tiers") return text;
  try { return JSON.parse(text).map(tierText).join(" | "); } catch (e) { return text; }
}

// ---- parameters and forms ---------------------------------------------------------------------
async function loadParams(market, fillForm) {  // every market's parameters; fills the tier form with one
  for (const m of state.markets) state.params.set(m, await call("admin.market_params", { market: m }));
  const p = state.params.get(market);
  if (fillForm) fillTiers(p); else markTiersInForce(p);
  renderPending();
}

function renderPending() {  // the engine's pending changes of every market, with their effective times
  const items = [];
  for (const [market, p] of state.params) {
    for (const c of p.pending || []) {
      const what = Object.entries(c.changes || {}).map(([k, v]) => `${k} ${v}`)
        .concat(c.tiers ? [`tiers ${c.tiers.map(tierText).join(" | ")}`] : []).join(", ");
      items.push(el("li", { "data-seq": c.seq }, `${market} ${c.command} (seq ${c.seq}): ${what}; effective ${utc(c.effective_ts_ns)}`));
    }
  }
  $("pending").replaceChildren(...items);
  $("pending-none").hidden = items.length > 0;
}

const tierText = (t) => `${t.max_notional_usd === null ? "∞" : "$" + t.max_notional_usd.toLocaleString("en-US")} ${t.max_leverage}x mm ${t.maintenance_margin_ppm}`;

function fillTiers(p) {
  const body = $("tiers-table").tBodies[0];
  body.replaceChildren(...p.tiers.map((t) => tierRow(t)));
  markTiersInForce(p);
}

function tierRow(t) {
  const input = (cls, v) => el("td", {}, Object.assign(el("input", { class: cls, size: 9, inputmode: "numeric" }), { value: v ?? "" }));
  const rm = el("button", { type: "button", class: "tier-remove" }, "remove");
  rm.onclick = () => rm.closest("tr").remove();
  return el("tr", {}, input("tier-notional", t.max_notional_usd), input("tier-leverage", t.max_leverage),
    input("tier-mm", t.maintenance_margin_ppm), el("td", { class: "tier-in-force" }, ""), el("td", {}, rm));
}

function markTiersInForce(p) {  // the engine's tiers in force, beside the edited rows
  const rows = [...$("tiers-table").tBodies[0].rows];
  rows.forEach((r, i) => { r.cells[3].textContent = p.tiers[i] ? tierText(p.tiers[i]) : "–"; });
}

function fillFunding() {
  const p = state.params.get($("funding-market").value) || state.params.get(state.markets[0]);
  if (!p) return;
  $("funding-cap").value = p.funding_cap_ppb;
  $("funding-clamp").value = p.funding_clamp_ppb;
}

function clearErrors(form) {
  for (const e of form.querySelectorAll(".invalid")) e.classList.remove("invalid");
  for (const e of form.querySelectorAll(".error, .result, .whatif")) e.textContent = "";
}

function intField(input, name, { allowEmpty = false } = {}) {
  const v = input.value.trim();
  if (v === "" && allowEmpty) return null;
  if (!/^-?\d+$/.test(v)) {
    input.classList.add("invalid");
    throw Object.assign(new Error(`${name}: a whole number is needed, got "${v}"`), { local: true });
  }
  return Number(v);
}

function readTiers() {
  return [...$("tiers-table").tBodies[0].rows].map((r, i) => ({
    max_notional_usd: intField(r.querySelector(".tier-notional"), `tiers[${i}].max_notional_usd`, { allowEmpty: true }),
    max_leverage: intField(r.querySelector(".tier-leverage"), `tiers[${i}].max_leverage`),
    maintenance_margin_ppm: intField(r.querySelector(".tier-mm"), `tiers[${i}].maintenance_margin_ppm`),
  }));
}

function showError(form, box, e) {
  // an engine refusal names its field (e.g. "tiers[1].maintenance_margin_ppm"): mark that input
  const code = e.engineCode ? `${e.code}/${e.engineCode}` : e.code;
  box.textContent = (e.local ? "" : `${code ?? ""} `) + (e.field ? `${e.field}: ` : "") + e.message;
  const m = /tiers\[(\d+)\]\.(\w+)/.exec(e.field || e.message);
  if (m) {
    const row = $("tiers-table").tBodies[0].rows[Number(m[1])];
    const cls = { max_notional_usd: ".tier-notional", max_leverage: ".tier-leverage", maintenance_margin_ppm: ".tier-mm" }[m[2]];
    const input = row && cls && row.querySelector(cls);
    if (input) input.classList.add("invalid");
  } else if (e.field && form.id === "funding-form") {
    const input = { cap_ppb: $("funding-cap"), clamp_ppb: $("funding-clamp"), funding_cap_ppb: $("funding-cap"),
      funding_clamp_ppb: $("funding-clamp"), reason: $("funding-reason") }[e.field];
    if (input) input.classList.add("invalid");
  } else if (e.field === "reason" && form.id === "tiers-form") {
    $("tiers-reason").classList.add("invalid");
  }
}

function whatIfText(w) {
  return `at ${utc(w.effective_ts_ns)} below maintenance margin: ${w.accounts_below_mm} account(s), ` +
    `${usd(w.notional_below_mm_micro)} of notional; below initial margin: ${w.accounts_below_im} account(s), ` +
    `${usd(w.notional_below_im_micro)} of notional`;
}

function tiersRequest(confirm) {
  const req = { market: $("tiers-market").value, tiers: readTiers(), reason: $("tiers-reason").value.trim(), confirm };
  if ($("tiers-when").value === "at") {
    const ms = Date.parse($("tiers-at").value + "Z");
    if (Number.isNaN(ms)) {
      $("tiers-at").classList.add("invalid");
      throw Object.assign(new Error("effective_ts_ns: pick a UTC date and time"), { local: true });
    }
    req.effective_ts_ns = BigInt(ms) * 1000000n;
  }
  return req;
}

async function checkTiers() {
  const form = $("tiers-form");
  clearErrors(form);
  $("tiers-confirm").hidden = true;
  try {
    const req = tiersRequest(false);
    const w = await call("admin.what_if_tiers", { market: req.market, tiers: req.tiers });
    $("tiers-whatif").textContent = "what-if: " + whatIfText(w);
    return { req, w };
  } catch (e) {
    showError(form, $("tiers-error"), e);
    return null;
  }
}

async function applyTiers(ev) {
  ev.preventDefault();
  const checked = await checkTiers();
  if (!checked) return;
  const { req, w } = checked;
  if (w.accounts_below_mm || w.accounts_below_im) {  // hurts: the operator confirms explicitly
    state.pendingTiers = { ...req, confirm: true };
    $("tiers-confirm-text").textContent = "This change hurts: " + whatIfText(w) + ". Apply anyway?";
    $("tiers-confirm").hidden = false;
    return;
  }
  await sendTiers(req);
}

async function sendTiers(req) {
  const form = $("tiers-form");
  $("tiers-confirm").hidden = true;
  try {
    const res = await call("admin.set_tiers", req);
    $("tiers-result").textContent = `accepted at seq ${res.seq}: ${req.market} tiers ${req.tiers.map(tierText).join(" | ")}, ` +
      `effective ${utc(res.effective_ts_ns)}${res.pending ? " (pending)" : " (in force)"}`;
    await refreshAudit();
    await loadParams(req.market, false);
  } catch (e) {
    showError(form, $("tiers-error"), e);
    if (e.whatIf) $("tiers-whatif").textContent = "what-if: " + whatIfText(e.whatIf);
  }
}

async function applyFunding(ev) {
  ev.preventDefault();
  const form = $("funding-form");
  clearErrors(form);
  try {
    const req = { market: $("funding-market").value, cap_ppb: intField($("funding-cap"), "cap_ppb"),
      clamp_ppb: intField($("funding-clamp"), "clamp_ppb"), reason: $("funding-reason").value.trim() };
    const res = await call("admin.set_funding_params", req);
    $("funding-result").textContent = `accepted at seq ${res.seq}: ${req.market} cap ${ppb(req.cap_ppb)}, clamp ${req.clamp_ppb} ppb, ` +
      `effective ${utc(res.effective_ts_ns)}${res.pending ? " (pending)" : " (in force)"}`;
    await refreshAudit();
  } catch (e) {
    showError(form, $("funding-error"), e);
  }
}

// ---- wiring -----------------------------------------------------------------------------------
$("logon-form").addEventListener("submit", logon);
$("tiers-form").addEventListener("submit", applyTiers);
$("tiers-check").addEventListener("click", checkTiers);
$("tiers-confirm-yes").addEventListener("click", () => sendTiers(state.pendingTiers));
$("tiers-confirm-no").addEventListener("click", () => { $("tiers-confirm").hidden = true; $("tiers-whatif").textContent = ""; });
$("tiers-add").addEventListener("click", () => $("tiers-table").tBodies[0].append(tierRow({})));
$("tiers-when").addEventListener("change", () => { $("tiers-at").hidden = $("tiers-when").value !== "at"; });
$("tiers-market").addEventListener("change", () => loadParams($("tiers-market").value, true));
$("funding-market").addEventListener("change", async () => {
  const market = $("funding-market").value;
  state.params.set(market, await call("admin.market_params", { market }));
  fillFunding();
});
$("funding-form").addEventListener("submit", applyFunding);
