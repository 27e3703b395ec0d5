// TradingMCP: helpers shared by the dashboard pages and the live WebSocket client.
// TMCP.connect({onMessage, onReconnect, symbols}) keeps /ws/dashboard/ open: it reconnects with
// exponential backoff and jitter (0.5 s doubling to 30 s), shows its state in #conn-state, and
// calls onReconnect() after every reconnect so the page refetches what it missed while offline.
(function () {
  "use strict";

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      // CSSOM, not a style attribute: the Content-Security-Policy (style-src 'self') refuses those.
      else if (k === "style") node.style.cssText = v;
      else node.setAttribute(k, v);
    }
    for (const child of children || []) if (child) node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    return node;
  }

  // Numbers arrive as strings (Binance style). fmt: at least `min`, at most `max` decimals.
  function fmt(value, min, max) {
    if (value === null || value === undefined || value === "") return "—";
    const n = Number(value);
    if (!isFinite(n)) return String(value);
    return n.toLocaleString("en-US", { minimumFractionDigits: min ?? 2, maximumFractionDigits: Math.max(min ?? 2, max ?? 8) });
  }
  function fmtSigned(value, digits) {
    const n = Number(value);
    if (!isFinite(n)) return "—";
    return (n > 0 ? "+" : "") + fmt(n, digits ?? 2, digits ?? 2);
  }
  function signClass(value) { const n = Number(value); return n > 0 ? "up" : n < 0 ? "down" : ""; }
  function time(ms) { return new Date(ms).toISOString().replace("T", " ").slice(0, 19); }
  function clock(ms) { return new Date(ms).toISOString().slice(11, 19); }

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  async function getJSON(url) {
    const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    const body = await resp.json().catch(() => ({ code: -1, msg: `HTTP ${resp.status}` }));
    if (!resp.ok) throw Object.assign(new Error(body.msg || `HTTP ${resp.status}`), { body, status: resp.status });
    return body;
  }
  async function sendJSON(method, url, data) {
    const resp = await fetch(url, {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
      body: data === undefined && method === "DELETE" ? undefined : JSON.stringify(data || {}),
    });
    const body = await resp.json().catch(() => ({ code: -1, msg: `HTTP ${resp.status}` }));
    return { ok: resp.ok, status: resp.status, body };
  }
  const postJSON = (url, data) => sendJSON("POST", url, data);
  const deleteJSON = (url) => sendJSON("DELETE", url);

  function debounce(fn, ms) {
    let timer = null;
    return function (...args) { clearTimeout(timer); timer = setTimeout(() => fn.apply(this, args), ms); };
  }

  const connEl = () => document.getElementById("conn-state");
  function setConn(kind, text) { const c = connEl(); if (c) { c.className = "conn conn-" + kind; c.textContent = text; } }

  function connect(opts) {
    let attempt = 0, everConnected = false, ws = null, countdown = null;
    window.tmcpSocketReady = false;
    function retry() {
      window.tmcpSocketReady = false;
      const delay = Math.min(30000, 500 * 2 ** attempt++) * (0.5 + Math.random());
      let left = Math.round(delay / 1000);
      const show = () => setConn("down", left > 0 ? `offline · retry in ${left} s` : "offline · reconnecting…");
      show();
      clearInterval(countdown);
      countdown = setInterval(() => { left -= 1; show(); if (left <= 0) clearInterval(countdown); }, 1000);
      setTimeout(() => { clearInterval(countdown); open(); }, delay);
    }
    function open() {
      setConn("connecting", "connecting…");
      try {
        ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/dashboard/");
      } catch (e) {  // refused before connecting: keep retrying
        retry();
        return;
      }
      window.tmcpSocket = ws;
      // Refused at once (Chromium: by the Content-Security-Policy) it is CLOSED already, and its
      // close event went before these handlers existed: retry from here.
      if (ws.readyState === 3) { retry(); return; }  // 3: CLOSED
      ws.onopen = () => {
        attempt = 0;
        setConn("live", "live");
        if (opts.symbols && opts.symbols.length) ws.send(JSON.stringify({ type: "subscribe", symbols: opts.symbols }));
        if (everConnected && opts.onReconnect) opts.onReconnect();
        everConnected = true;
      };
      ws.onmessage = (ev) => {
        const msg = JSON.parse(ev.data);
        if (msg.type === "hello") { window.tmcpHello = msg; if (!(opts.symbols && opts.symbols.length)) window.tmcpSocketReady = true; return; }
        if (msg.type === "subscribed") { window.tmcpSocketReady = true; return; }
        opts.onMessage(msg);
      };
      ws.onclose = (ev) => {
        window.tmcpSocketReady = false;
        if (ev.code === 4401) { setConn("down", "logged out"); return; }
        retry();
      };
    }
    open();
    return { send: (m) => ws && ws.readyState === 1 && ws.send(JSON.stringify(m)), close: () => ws && ws.close() };
  }

  // A short human summary of a tool call's arguments.
  function summarizeParams(params) {
    if (!params) return "";
    const skip = new Set(["account_id"]);
    return Object.entries(params).filter(([k, v]) => !skip.has(k) && v !== null && v !== "")
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ").slice(0, 160);
  }

  window.TMCP = { el, fmt, fmtSigned, signClass, time, clock, csrfToken, getJSON, postJSON, deleteJSON, debounce, connect, summarizeParams };
})();
