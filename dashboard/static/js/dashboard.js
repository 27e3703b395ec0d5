// TradingMCP overview: renders /dashboard/state/, applies live pushes from /ws/dashboard/ at once
// (orders, balances, activity), and refetches the state shortly after each account event (and
// after every reconnect) so portfolio, positions, fills and the risk panel follow. Confirm mode: the
// "Pending approval" panel lists held orders (live `approval` events) with Approve / Reject buttons;
// a refusal by the risk check at approval time stays inline in its row until dismissed.
(function () {
  "use strict";
  const { el, fmt, fmtSigned, signClass, time, clock, getJSON, postJSON, deleteJSON, debounce, summarizeParams } = window.TMCP;
  let state = JSON.parse(document.getElementById("initial-state").textContent);
  const lastPrices = {};
  const charts = {};
  // Signed money with 2 decimals; a value that rounds to zero is shown as a neutral 0.00.
  const money = (v) => (Math.abs(Number(v)) < 0.005 ? "0.00" : fmtSigned(v));
  const moneyClass = (v) => (Math.abs(Number(v)) < 0.005 ? "" : signClass(v));
  const seenEvents = new Set();

  // --- tables ------------------------------------------------------------------------------------
  function table(cls, headers, rows, empty) {
    const body = el("tbody", {}, rows.length ? rows : [el("tr", { class: "empty" }, [el("td", { colspan: String(headers.length), class: "muted", text: empty })])]);
    return el("table", { class: cls }, [
      el("thead", {}, [el("tr", {}, headers.map(h => el("th", { class: h.startsWith("#") ? "num" : "", text: h.replace(/^#/, "") })))]),
      body,
    ]);
  }
  function orderRow(o) {
    return el("tr", { "data-order-id": String(o.orderId), "data-client-order-id": o.clientOrderId }, [
      el("td", { class: "muted", text: time(o.time) }),
      el("td", { text: o.symbol }),
      el("td", { class: "side-" + o.side, text: o.side }),
      el("td", { text: o.type }),
      el("td", { class: "num", text: fmt(o.origQty, 0) }),
      el("td", { class: "num", text: o.price ? fmt(o.price, 2) : "—" }),
      el("td", { class: "num", text: fmt(o.avgPrice, 2) }),
      el("td", { class: "num", text: fmt(o.cummulativeQuoteQty, 2, 2) }),
      el("td", { class: "status status-" + o.status, text: o.status, title: o.rejectReason || "" }),
      el("td", { class: "muted", text: o.channel }),
    ]);
  }
  function openOrderRow(a, o) {
    return el("tr", { "data-open-order-id": String(o.orderId) }, [
      el("td", { class: "muted", text: time(o.time) }),
      el("td", { text: o.symbol }),
      el("td", { class: "side-" + o.side, text: o.side }),
      el("td", { text: o.type }),
      el("td", { class: "num", text: o.price ? fmt(o.price, 2) : (o.stopPrice ? "stop " + fmt(o.stopPrice, 2) : "—") }),
      el("td", { class: "num", text: `${fmt(o.executedQty, 0)} / ${fmt(o.origQty, 0)}` }),
      el("td", { class: "muted", text: o.channel }),
      el("td", { class: "num" }, [el("button", { class: "btn-small", text: "Cancel", onclick: () => cancelOrder(a.accountId, o.orderId) })]),
    ]);
  }
  const ORDER_HEAD = ["Time (UTC)", "Symbol", "Side", "Type", "#Qty", "#Price", "#Avg price", "#Quote qty", "Status", "Via"];
  const OPEN_HEAD = ["Time (UTC)", "Symbol", "Side", "Type", "#Price", "#Filled / qty", "Via", "#"];

  function balanceRows(a) {
    const byAsset = Object.fromEntries((a.portfolio.assets || []).map(x => [x.asset, x]));
    return a.balances.map(b => el("tr", { "data-asset": b.asset }, [
      el("td", { class: "asset", text: b.asset }),
      el("td", { class: "num", text: fmt(b.free, 2) }),
      el("td", { class: "num muted", text: fmt(b.locked, 2) }),
      el("td", { class: "num", text: byAsset[b.asset] && byAsset[b.asset].value ? fmt(byAsset[b.asset].value, 2, 2) : "—" }),
    ]));
  }
  function positionRows(a) {
    return (a.portfolio.positions || []).filter(p => Number(p.quantity) !== 0).map(p => el("tr", { "data-position": p.symbol }, [
      el("td", {}, [el("a", { href: `/market/${p.symbol}/`, text: p.symbol })]),
      el("td", { class: "num", text: fmt(p.quantity, 0) }),
      el("td", { class: "num", text: fmt(p.avgEntryPrice, 2) }),
      el("td", { class: "num", text: fmt(p.markPrice, 2) }),
      el("td", { class: "num", text: fmt(p.value, 2, 2) }),
      el("td", { class: "num " + moneyClass(p.unrealizedPnl), text: money(p.unrealizedPnl) }),
      el("td", { class: "num " + moneyClass(p.realizedPnl), text: money(p.realizedPnl) }),
    ]));
  }
  function fillRows(a) {
    return a.fills.map(f => el("tr", { "data-fill-id": String(f.id) }, [
      el("td", { class: "muted", text: time(f.time) }),
      el("td", { text: f.symbol }),
      el("td", { class: "side-" + f.side, text: f.side }),
      el("td", { class: "num", text: fmt(f.price, 2) }),
      el("td", { class: "num", text: fmt(f.qty, 0) }),
      el("td", { class: "num", text: fmt(f.quoteQty, 2, 2) }),
      el("td", { class: "num muted", text: `${fmt(f.commission, 0)} ${f.commissionAsset}` }),
      el("td", { class: "muted", text: f.isMaker ? "maker" : "taker" }),
    ]));
  }

  // --- risk panel --------------------------------------------------------------------------------
  function riskPanel(a) {
    const r = a.risk;
    const rows = r.limits.map(l => {
      const unlimited = l.limit === null;
      const pct = l.pct === null ? null : Math.max(0, Math.min(100, l.pct));
      const level = pct === null ? "" : pct >= 90 ? "hot" : pct >= 70 ? "warm" : "";
      return el("div", { class: "limit " + (unlimited ? "unlimited" : ""), "data-limit": l.name }, [
        el("div", { class: "limit-top" }, [
          el("span", { class: "limit-name", text: l.name.replace(/_/g, " "), title: l.note }),
          el("span", { class: "limit-val", text: unlimited ? "unlimited" :
            (l.usage !== null ? `${fmt(l.usage, 0, 2)} / ${fmt(l.limit, 0, 2)} ${l.unit}` : `${fmt(l.limit, 0, 2)} ${l.unit} ${l.note}`) }),
        ]),
        pct === null ? null : el("div", { class: "bar" }, [el("div", { class: "bar-fill " + level, style: `width:${pct.toFixed(1)}%` })]),
      ]);
    });
    if (r.locks && r.locks.length) rows.push(el("div", { class: "locks" }, [
      el("div", { class: "locks-head", text: `Protection lock${r.locks.length === 1 ? "" : "s"} · new BUY orders refused, exits allowed` }),
      ...r.locks.map(l => el("div", { class: "lock", "data-lock-id": String(l.id), "data-lock-symbol": l.symbol || "" }, [
        el("div", { class: "lock-top" }, [
          el("span", { class: "lock-what", text: `${l.symbol || "whole account"} · ${l.protection.replace(/_/g, " ")}` }),
          el("span", { class: "lock-until", text: `until ${time(l.until)} UTC`, title: `locked at ${time(l.lockedAt)} UTC` }),
        ]),
        el("div", { class: "lock-why", text: l.reason }),
      ])),
    ]));
    if (r.allowedSymbols.length) rows.push(el("div", { class: "limit" }, [el("div", { class: "limit-top" }, [
      el("span", { class: "limit-name", text: "allowed symbols" }), el("span", { class: "limit-val", text: r.allowedSymbols.join(", ") })])]));
    return rows;
  }

  // --- pending approval (confirm mode) -----------------------------------------------------------
  // Decisions taken in this tab whose outcome stays on screen (a refusal at approval time, an error):
  // approvalId -> {text, cls, approval}. Pending rows come from each account's `pending` list.
  const decided = new Map();
  const busy = new Set();

  function approvalQty(p) {
    if (p.origQty) return fmt(p.origQty, 0);
    return p.origQuoteOrderQty ? `${fmt(p.origQuoteOrderQty, 0)} (quote)` : "—";
  }
  function approvalRow(a, p) {
    const note = decided.get(p.approvalId);
    const pending = p.status === "PENDING_APPROVAL" && !(note && note.final);
    let actions;
    if (pending && a.canTrade) {
      actions = [
        el("button", { class: "btn-small approve", text: "Approve", disabled: busy.has(p.approvalId) ? "disabled" : null,
          title: "Place this order now (validated and risk-checked now)", onclick: () => decide(p.approvalId, "approve") }),
        el("button", { class: "btn-small danger reject", text: "Reject", disabled: busy.has(p.approvalId) ? "disabled" : null,
          title: "Refuse it: nothing is placed", onclick: () => decide(p.approvalId, "reject") }),
      ];
    } else if (pending) {
      actions = [el("span", { class: "muted small", text: "view only" })];
    } else {
      actions = [el("button", { class: "btn-small dismiss", text: "Dismiss", onclick: () => { decided.delete(p.approvalId); renderApprovals(); } })];
    }
    return el("tr", { "data-approval-id": String(p.approvalId), "data-client-order-id": p.clientOrderId, "data-status": p.status,
      class: busy.has(p.approvalId) ? "busy" : "" }, [
      el("td", { class: "muted", text: time(p.time) }),
      el("td", { text: a.name }),
      el("td", {}, [el("a", { href: `/market/${p.symbol}/`, text: p.symbol })]),
      el("td", { class: "side-" + p.side, text: p.side }),
      el("td", { text: p.type }),
      el("td", { class: "num", text: approvalQty(p) }),
      el("td", { class: "num", text: p.price ? fmt(p.price, 2) : (p.stopPrice ? "stop " + fmt(p.stopPrice, 2) : "market") }),
      el("td", {}, [p.requestedBy ? el("span", { class: "tok", text: p.requestedBy, title: "agent token" }) : el("span", { class: "muted", text: p.channel })]),
      el("td", { class: "muted small", text: p.clientOrderId }),
      el("td", { class: "approval-actions" }, [
        ...actions,
        note ? el("div", { class: "approval-note " + (note.cls || ""), text: note.text }) : null,
      ]),
    ]);
  }
  function renderApprovals() {
    const rows = [];
    for (const a of state.accounts) {
      const shown = new Set();
      for (const p of a.pending || []) { rows.push(approvalRow(a, p)); shown.add(p.approvalId); }
      for (const [id, note] of decided) if (note.account === a.accountId && !shown.has(id)) rows.push(approvalRow(a, note.approval));
    }
    const panel = document.getElementById("approvals");
    const waiting = state.accounts.reduce((n, a) => n + (a.pending || []).filter(p => p.status === "PENDING_APPROVAL").length, 0);
    panel.hidden = rows.length === 0;
    panel.classList.toggle("attention", waiting > 0);
    document.getElementById("approvals-count").textContent = `${waiting} waiting`;
    document.getElementById("approvals-slot").replaceChildren(table("approvals",
      ["Requested (UTC)", "Account", "Symbol", "Side", "Type", "#Qty", "#Price", "Agent", "clientOrderId", "Decision"], rows, "Nothing waiting."));
  }
  function onApproval(acct, p) {
    acct.pending = (acct.pending || []).filter(x => x.approvalId !== p.approvalId);
    if (p.status === "PENDING_APPROVAL") acct.pending.push(p);
    acct.pending.sort((x, y) => x.time - y.time || x.approvalId - y.approvalId);
  }
  async function decide(approvalId, decision) {
    const acct = state.accounts.find(a => (a.pending || []).some(p => p.approvalId === approvalId));
    const held = acct && acct.pending.find(p => p.approvalId === approvalId);
    busy.add(approvalId); renderApprovals();
    let r;
    try { r = await postJSON(`/api/v1/approvals/${approvalId}/${decision}`, {}); }
    catch (e) { r = { ok: false, body: { msg: "Network error: try again." } }; }
    busy.delete(approvalId);
    if (!r.ok) {
      // Nothing was decided (e.g. stale market data: it stays pending) or it was decided elsewhere.
      decided.set(approvalId, { account: acct && acct.accountId, approval: held, cls: "down", final: r.status === 400 && /not pending/.test(r.body.msg || ""),
        text: r.body.msg || `HTTP ${r.status}` });
    } else if (decision === "reject") {
      decided.delete(approvalId);
    } else if (r.body.error) {
      // Approved, but the risk check (or the venue) refused the order at approval time: say why, inline.
      decided.set(approvalId, { account: acct && acct.accountId, approval: r.body.approval, cls: "down", final: true,
        text: `Refused at approval: ${r.body.error.msg}` });
    } else {
      decided.delete(approvalId);
      if (acct && r.body.order) onOrder(acct, document.getElementById("account-" + acct.accountId), r.body.order);
    }
    if (acct && r.ok) onApproval(acct, r.body.approval);
    renderApprovals();
    refresh();
  }

  function stateBadge(r) {
    return el("span", { class: "badge state-" + r.tradingState + " risk-state", text: r.tradingState });
  }

  function banner(a) {
    const r = a.risk;
    if (r.tradingState === "ACTIVE") return null;
    const until = r.haltedUntil ? ` until ${time(r.haltedUntil)} UTC` : "";
    const title = r.breakerTripped ? "Circuit breaker tripped" : r.tradingState === "HALTED" ? "Trading halted" : "Reduce-only";
    return el("div", { class: "banner banner-" + (r.tradingState === "HALTED" ? "halt" : "warn"), "data-banner": r.tradingState }, [
      el("strong", { text: `${title} · ${a.name}` }),
      el("span", { text: ` ${r.haltedReason || ""}${until}. New orders from agents and people are refused.` }),
    ]);
  }

  // --- account section ---------------------------------------------------------------------------
  function buildAccount(a) {
    const section = el("section", { class: "account", id: "account-" + a.accountId, "data-account-id": String(a.accountId) }, [
      el("div", { class: "account-head" }, [
        el("div", {}, [
          el("h2", { text: a.name }),
          el("div", { class: "meta", text: `#${a.accountId} · ${a.venue} · maker ${fmt(Number(a.makerFeeRate) * 100, 2)} % / taker ${fmt(Number(a.takerFeeRate) * 100, 2)} %` }),
        ]),
        el("div", { class: "account-actions" }, [
          el("span", { class: "state-slot" }),
          el("button", { class: "btn-danger kill-switch", text: "Kill switch", title: "Halt trading now and cancel every open order",
            onclick: () => killSwitch(a.accountId) }),
          el("button", { class: "btn-ghost resume", text: "Resume trading", onclick: () => resume(a.accountId) }),
          a.isOwner ? el("a", { class: "btn-ghost sharing", href: `/accounts/${a.accountId}/sharing/`, text: "Sharing",
            title: "Who else may see or trade this account" }) : null,
        ]),
      ]),
      el("div", { class: "account-grid" }, [
        el("div", { class: "card pf" }, [
          el("div", { class: "panel-head" }, [el("h3", { text: "Portfolio value" }), el("span", { class: "muted small pf-time" })]),
          el("div", { class: "pf-figures" }, [
            el("div", {}, [el("div", { class: "pf-value" }), el("div", { class: "muted small", text: a.quoteAsset })]),
            el("div", {}, [el("div", { class: "muted small", text: "Unrealized P&L" }), el("div", { class: "pf-unreal" })]),
            el("div", {}, [el("div", { class: "muted small", text: "Realized P&L" }), el("div", { class: "pf-real" })]),
            el("div", {}, [el("div", { class: "muted small", text: "P&L (curve)" }), el("div", { class: "pf-change" })]),
          ]),
          el("div", { class: "pf-chart" }),
        ]),
        el("div", { class: "card risk" }, [el("div", { class: "panel-head" }, [el("h3", { text: "Risk limits" })]), el("div", { class: "risk-body" })]),
        el("div", { class: "card scroll-x" }, [el("h3", { text: "Positions" }), el("div", { class: "positions-slot" })]),
        el("div", { class: "card scroll-x" }, [el("h3", { text: "Balances" }), el("div", { class: "balances-slot" })]),
        el("div", { class: "card wide" }, [el("h3", { text: "Open orders" }), el("div", { class: "open-slot" })]),
        el("div", { class: "card wide" }, [el("h3", { text: "Orders" }), el("div", { class: "orders-slot" })]),
        el("div", { class: "card wide" }, [el("h3", { text: "Recent fills" }), el("div", { class: "fills-slot" })]),
      ]),
    ]);
    return section;
  }

  function fillAccount(section, a) {
    const q = (s) => section.querySelector(s);
    q(".state-slot").replaceChildren(stateBadge(a.risk));
    q(".kill-switch").hidden = a.risk.tradingState === "HALTED";
    q(".resume").hidden = a.risk.tradingState === "ACTIVE";
    q(".pf-value").textContent = fmt(a.portfolio.value, 2, 2);
    q(".pf-unreal").textContent = money(a.portfolio.unrealizedPnl);
    q(".pf-unreal").className = "pf-unreal " + moneyClass(a.portfolio.unrealizedPnl);
    q(".pf-real").textContent = money(a.portfolio.realizedPnl);
    q(".pf-real").className = "pf-real " + moneyClass(a.portfolio.realizedPnl);
    const last = a.curve.length ? a.curve[a.curve.length - 1] : null;
    q(".pf-change").textContent = last ? money(last.pnl) : "—";
    q(".pf-change").className = "pf-change " + (last ? moneyClass(last.pnl) : "");
    q(".pf-time").textContent = a.curve.length ? `${a.curve.length} snapshots` : "no snapshots yet";
    q(".risk-body").replaceChildren(...riskPanel(a));
    q(".balances-slot").replaceChildren(table("balances", ["Asset", "#Free", "#Locked", "#Value " + a.quoteAsset], balanceRows(a), "No balances."));
    q(".positions-slot").replaceChildren(table("positions", ["Symbol", "#Qty", "#Avg entry", "#Mark", "#Value", "#Unrealized", "#Realized"], positionRows(a), "No open positions."));
    q(".open-slot").replaceChildren(table("open-orders", OPEN_HEAD, a.openOrders.map(o => openOrderRow(a, o)), "No open orders."));
    q(".orders-slot").replaceChildren(table("orders", ORDER_HEAD, a.orders.map(orderRow), "No orders yet."));
    q(".fills-slot").replaceChildren(table("fills", ["Time (UTC)", "Symbol", "Side", "#Price", "#Qty", "#Quote qty", "#Fee", "Liquidity"], fillRows(a), "No fills yet."));
    drawCurve(section, a);
  }

  function drawCurve(section, a) {
    const holder = section.querySelector(".pf-chart");
    if (!window.LightweightCharts) return;
    let c = charts[a.accountId];
    if (!c) {
      const LC = window.LightweightCharts;
      const chart = LC.createChart(holder, {
        autoSize: true, height: 170,
        layout: { background: { type: "solid", color: "transparent" }, textColor: "#8b949e", fontSize: 11, attributionLogo: false },
        grid: { vertLines: { visible: false }, horzLines: { color: "#1f252e" } },
        rightPriceScale: { borderVisible: false }, timeScale: { borderVisible: false, timeVisible: true },
        handleScroll: false, handleScale: false,
      });
      const series = chart.addSeries(LC.BaselineSeries, {
        baseValue: { type: "price", price: 0 }, lineWidth: 2, priceLineVisible: false,
        topLineColor: "#2ebd85", topFillColor1: "rgba(46,189,133,.28)", topFillColor2: "rgba(46,189,133,.02)",
        bottomLineColor: "#f6465d", bottomFillColor1: "rgba(246,70,93,.02)", bottomFillColor2: "rgba(246,70,93,.28)",
      });
      c = charts[a.accountId] = { chart, series };
    }
    const pts = a.curve.map(p => ({ time: p.time, value: Number(p.value) }));
    const base = pts.length ? pts[0].value : Number(a.portfolio.value);
    c.series.applyOptions({ baseValue: { type: "price", price: base } });
    c.series.setData(pts);
    holder.classList.toggle("empty-chart", pts.length < 2);
    holder.setAttribute("data-points", String(pts.length));
    c.chart.timeScale().fitContent();
  }

  function render() {
    const root = document.getElementById("accounts");
    const want = state.accounts.map(a => "account-" + a.accountId);
    const have = [...root.querySelectorAll("section.account")].map(s => s.id);
    if (want.join() !== have.join()) {
      for (const id of Object.keys(charts)) { charts[id].chart.remove(); delete charts[id]; }
      root.replaceChildren(...state.accounts.map(buildAccount));
      if (!state.accounts.length) root.appendChild(el("div", { class: "card muted", text: "You have no trading account yet: ask an admin to create one." }));
    }
    for (const a of state.accounts) fillAccount(document.getElementById("account-" + a.accountId), a);
    renderBanners();
    renderApprovals();
    renderActivity(state.activity, true);
    for (const t of state.tickers || []) applyTicker(t.symbol, t.bidPrice, t.askPrice, t.lastPrice);
  }

  function renderBanners() {
    const halted = state.accounts.filter(a => a.risk.tradingState !== "ACTIVE");
    document.getElementById("banners").replaceChildren(...halted.map(a => {
      const b = banner(a); b.classList.add("page-banner"); return b;
    }));
  }

  // --- activity feed -----------------------------------------------------------------------------
  function toolName(action) {
    if (action.startsWith("mcp.")) return action.slice(4);
    return { "order.place": "place_order", "order.cancel": "cancel_order", "order.cancel_all": "cancel_all_orders",
      "risk.halt": "kill switch", "risk.state": "trading state", "order.hold": "place_order (held)",
      "order.approve": "approve order", "order.reject": "reject order", "risk.protection_lock": "protection lock" }[action] || action;
  }
  function activityItem(e) {
    const who = e.token ? el("span", { class: "tok", text: e.token, title: "agent token" }) : el("span", { class: "chan", text: e.channel });
    const risk = e.risk ? el("div", { class: "act-risk " + (e.risk.allowed ? "up" : "down") },
      [e.risk.allowed ? "risk ✓ all limits passed" : `risk ✗ ${e.risk.reason}`]) : null;
    const msg = e.outcome !== "ok" && e.message && !(e.risk && !e.risk.allowed) ? el("div", { class: "act-msg down", text: e.message }) :
      (e.outcome === "ok" && e.message ? el("div", { class: "act-msg muted", text: e.message }) : null);
    return el("li", { class: "act act-" + e.outcome, "data-event-id": String(e.id), "data-action": e.action, "data-outcome": e.outcome }, [
      el("div", { class: "act-top" }, [
        el("span", { class: "act-time muted", text: clock(Date.parse(e.time)) }),
        who,
        el("span", { class: "act-tool", text: toolName(e.action) }),
        el("span", { class: "badge out-" + e.outcome, text: e.outcome }),
      ]),
      el("div", { class: "act-args muted", text: summarizeParams(e.params) }),
      risk, msg,
    ]);
  }
  function renderActivity(events, replace) {
    const list = document.getElementById("activity");
    if (replace) { list.replaceChildren(); seenEvents.clear(); }
    // `replace`: newest first (the state); live pushes: oldest first, so each goes on top in turn.
    for (const e of events) {
      if (seenEvents.has(e.id)) continue;
      seenEvents.add(e.id);
      const li = activityItem(e);
      if (replace) list.append(li); else { li.classList.add("flash"); list.prepend(li); }
    }
    while (list.children.length > 100) list.lastChild.remove();
    if (!list.children.length) list.appendChild(el("li", { class: "muted empty", text: "No agent activity yet. Connect an agent from the Agents & tokens page." }));
    else list.querySelectorAll("li.empty").forEach(n => n.remove());
    document.getElementById("activity-count").textContent = `${list.querySelectorAll("li.act").length} event${list.querySelectorAll("li.act").length === 1 ? "" : "s"}`;
  }

  // --- live --------------------------------------------------------------------------------------
  function applyTicker(symbol, bid, ask, last) {
    const card = document.querySelector(`.ticker[data-symbol="${symbol}"]`);
    if (!card) return;
    if (bid) card.querySelector('[data-field="bid"]').textContent = fmt(bid, 2);
    if (ask) card.querySelector('[data-field="ask"]').textContent = fmt(ask, 2);
    if (last) {
      const price = Number(last), node = card.querySelector('[data-field="last"]');
      node.textContent = fmt(last, 2);
      node.classList.toggle("up", price > (lastPrices[symbol] ?? price));
      node.classList.toggle("down", price < (lastPrices[symbol] ?? price));
      lastPrices[symbol] = price;
    }
  }
  function onMarket(msg) {
    if (msg.stream === "bookTicker") applyTicker(msg.symbol, msg.data.bidPrice, msg.data.askPrice, null);
    else if (msg.stream.startsWith("kline_")) applyTicker(msg.symbol, null, null, msg.data.c);
    if (window.__tmcpLatency && msg.stream === "bookTicker" && msg.data.receivedAt) window.__tmcpLatency.push(Date.now() - msg.data.receivedAt);
  }

  const refresh = debounce(async () => {
    try { state = await getJSON("/dashboard/state/"); render(); } catch (e) { /* next event or reconnect retries */ }
  }, 400);

  function onOrder(acct, section, o) {
    acct.orders = [o, ...acct.orders.filter(x => x.orderId !== o.orderId)].slice(0, 50);
    const tbody = section.querySelector("table.orders tbody");
    tbody.querySelector("tr.empty")?.remove();
    const old = tbody.querySelector(`tr[data-order-id="${o.orderId}"]`);
    const row = orderRow(o);
    row.classList.add("flash");
    if (old) old.replaceWith(row); else tbody.prepend(row);
    const open = ["NEW", "PARTIALLY_FILLED"].includes(o.status);
    acct.openOrders = acct.openOrders.filter(x => x.orderId !== o.orderId).concat(open ? [o] : []);
    const obody = section.querySelector("table.open-orders tbody");
    const oldOpen = obody.querySelector(`tr[data-open-order-id="${o.orderId}"]`);
    if (open) { obody.querySelector("tr.empty")?.remove(); const r = openOrderRow(acct, o); if (oldOpen) oldOpen.replaceWith(r); else obody.append(r); }
    else if (oldOpen) oldOpen.remove();
  }

  function onAccount(msg) {
    const acct = state.accounts.find(a => a.accountId === msg.account);
    const section = document.getElementById("account-" + msg.account);
    if (!acct || !section) return;
    const items = msg.items || [msg.data];
    if (msg.kind === "order") items.forEach(o => onOrder(acct, section, o));
    else if (msg.kind === "balances") {
      // A "partial" event carries only the assets an order just changed: merge it by asset.
      const rows = msg.data.partial
        ? Object.values(Object.fromEntries([...acct.balances, ...msg.data.balances].map(b => [b.asset, b])))
        : msg.data.balances;
      acct.balances = rows.filter(b => Number(b.free) || Number(b.locked)).sort((x, y) => x.asset.localeCompare(y.asset));
      section.querySelector(".balances-slot").replaceChildren(
        table("balances", ["Asset", "#Free", "#Locked", "#Value " + acct.quoteAsset], balanceRows(acct), "No balances."));
    } else if (msg.kind === "activity") renderActivity(items, false);
    else if (msg.kind === "approval") { items.forEach(p => onApproval(acct, p)); renderApprovals(); }
    refresh();
    document.dispatchEvent(new CustomEvent("tmcp:account", { detail: msg }));
  }

  async function killSwitch(accountId) {
    const a = state.accounts.find(x => x.accountId === accountId);
    if (!confirm(`Halt trading on "${a.name}" now and cancel every open order?`)) return;
    const r = await postJSON(`/dashboard/api/accounts/${accountId}/halt/`);
    if (!r.ok) alert(r.body.msg || "The kill switch failed."); else { a.risk = r.body.risk; render(); refresh(); }
  }
  async function resume(accountId) {
    const a = state.accounts.find(x => x.accountId === accountId);
    if (!confirm(`Resume trading on "${a.name}"?`)) return;
    const r = await postJSON(`/dashboard/api/accounts/${accountId}/resume/`);
    if (!r.ok) alert(r.body.msg || "Resume failed."); else { a.risk = r.body.risk; render(); refresh(); }
  }
  async function cancelOrder(accountId, orderId) {
    const r = await deleteJSON(`/api/v1/accounts/${accountId}/orders/${orderId}`);
    if (!r.ok) alert(r.body.msg || "Cancel failed.");
  }

  render();
  TMCP.connect({
    onMessage(msg) {
      if (msg.type === "market") onMarket(msg);
      else if (msg.type === "account") onAccount(msg);
      else if (msg.type === "user" && msg.kind === "activity") renderActivity(msg.items || [msg.data], false);
    },
    onReconnect: refresh,
  });
})();
