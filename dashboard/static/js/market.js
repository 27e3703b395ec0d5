// TradingMCP market page: lightweight-charts candles + volume with SMA/EMA/Bollinger overlays and
// RSI / MACD panes (values from the server's TA-Lib code), the forming candle updated live from the
// kline_1m stream (aggregated into the selected interval), order book and trades, the order ticket.
(function () {
  "use strict";
  const { el, fmt, time, clock, getJSON, postJSON, debounce } = window.TMCP;
  const cfg = JSON.parse(document.getElementById("market-config").textContent);
  const SYMBOL = cfg.symbol;
  const IV_MS = { "1m": 60e3, "5m": 300e3, "15m": 900e3, "1h": 3600e3, "4h": 14400e3, "1d": 86400e3 };
  const COLORS = { up: "#2ebd85", down: "#f6465d", sma20: "#f0b90b", sma50: "#c77dff", ema12: "#4cc9f0", ema26: "#ff9f43",
    bb: "rgba(125,140,160,.9)", bbMid: "rgba(125,140,160,.5)", rsi: "#c77dff", macd: "#4cc9f0", signal: "#ff9f43" };
  let interval = "1m";
  const overlays = { sma: true, ema: false, bbands: true };
  const LC = window.LightweightCharts;
  const chartEl = document.getElementById("chart");

  // --- chart -------------------------------------------------------------------------------------
  const chart = LC.createChart(chartEl, {
    autoSize: true,
    layout: { background: { type: "solid", color: "#10141a" }, textColor: "#8b949e", fontSize: 11,
    // The logo injects a <style> element, which the Content-Security-Policy refuses: the page
    // credits TradingView with a link under the chart instead (market.html).
    attributionLogo: false,
      panes: { separatorColor: "#262c36", separatorHoverColor: "rgba(240,185,11,.25)", enableResize: true } },
    grid: { vertLines: { color: "#181d24" }, horzLines: { color: "#181d24" } },
    crosshair: { mode: LC.CrosshairMode.Normal },
    rightPriceScale: { borderColor: "#262c36" },
    timeScale: { borderColor: "#262c36", timeVisible: true, secondsVisible: false, rightOffset: 4 },
  });
  const line = (color, width, pane, extra) => chart.addSeries(LC.LineSeries, { color, lineWidth: width ?? 1, priceLineVisible: false,
    lastValueVisible: false, crosshairMarkerVisible: false, ...(extra || {}) }, pane ?? 0);
  const candles = chart.addSeries(LC.CandlestickSeries, { upColor: COLORS.up, downColor: COLORS.down, borderVisible: false,
    wickUpColor: COLORS.up, wickDownColor: COLORS.down });
  candles.priceScale().applyOptions({ scaleMargins: { top: 0.06, bottom: 0.24 } });
  const volume = chart.addSeries(LC.HistogramSeries, { priceFormat: { type: "volume" }, priceScaleId: "vol", lastValueVisible: false, priceLineVisible: false });
  chart.priceScale("vol").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  const ov = {
    sma: { sma20: line(COLORS.sma20), sma50: line(COLORS.sma50) },
    ema: { ema12: line(COLORS.ema12), ema26: line(COLORS.ema26) },
    bbands: { upper: line(COLORS.bb, 1, 0, { lineStyle: 2 }), middle: line(COLORS.bbMid, 1, 0, { lineStyle: 1 }), lower: line(COLORS.bb, 1, 0, { lineStyle: 2 }) },
  };
  const rsi = line(COLORS.rsi, 1.5, 1, { lastValueVisible: true });
  rsi.createPriceLine({ price: 70, color: "rgba(246,70,93,.5)", lineStyle: 2, lineWidth: 1, axisLabelVisible: false });
  rsi.createPriceLine({ price: 30, color: "rgba(46,189,133,.5)", lineStyle: 2, lineWidth: 1, axisLabelVisible: false });
  const macdHist = chart.addSeries(LC.HistogramSeries, { priceLineVisible: false, lastValueVisible: false }, 2);
  const macdLine = line(COLORS.macd, 1.5, 2, { lastValueVisible: true });
  const macdSignal = line(COLORS.signal, 1, 2);
  const panes = chart.panes();
  panes[0].setStretchFactor(5); panes[1].setStretchFactor(1.4); panes[2].setStretchFactor(1.4);

  let bars = [];            // numbers, ascending time (s)
  let volBase = 0, cur1m = null;  // aggregation of 1m stream updates into the selected interval
  let lastData = null;

  function num(c) { return { time: c.time, open: +c.open, high: +c.high, low: +c.low, close: +c.close }; }
  function volBar(b, v) { return { time: b.time, value: v, color: b.close >= b.open ? "rgba(46,189,133,.35)" : "rgba(246,70,93,.35)" }; }

  function applyOverlays() {
    if (!lastData) return;
    for (const [name, lines] of Object.entries(ov)) {
      for (const [key, series] of Object.entries(lines)) series.setData(overlays[name] ? (lastData.indicators[name][key] || []) : []);
    }
    legend();
  }
  function legend() {
    // Built as nodes with CSSOM colours: the Content-Security-Policy (style-src 'self') refuses
    // style="" attributes in markup.
    const p = lastData ? lastData.params : {};
    const items = [];
    const item = (color, text) => { const s = document.createElement("span"); s.style.color = color; s.textContent = text; return s; };
    if (overlays.sma && p.sma) items.push([item(COLORS.sma20, `SMA ${p.sma.periods[0]}`), item(COLORS.sma50, `SMA ${p.sma.periods[1]}`)]);
    if (overlays.ema && p.ema) items.push([item(COLORS.ema12, `EMA ${p.ema.periods[0]}`), item(COLORS.ema26, `EMA ${p.ema.periods[1]}`)]);
    if (overlays.bbands && p.bbands) items.push([item(COLORS.bb, `BB ${p.bbands.period}, ${p.bbands.nbdev}σ`)]);
    if (p.rsi) items.push([item(COLORS.rsi, `RSI ${p.rsi.period}`)]);
    if (p.macd) items.push([item(COLORS.macd, `MACD ${p.macd.fast},${p.macd.slow},${p.macd.signal}`)]);
    const box = document.getElementById("legend");
    box.replaceChildren();
    items.forEach((spans, i) => {
      if (i) box.append(" · ");
      spans.forEach((span, j) => { if (j) box.append(" "); box.append(span); });
    });
  }

  async function loadChart(keepView) {
    const errBox = document.getElementById("chart-error");
    let data;
    try { data = await getJSON(`/dashboard/api/chart/${SYMBOL}/?interval=${interval}&limit=500`); }
    catch (e) { errBox.hidden = false; errBox.textContent = e.message; return; }
    errBox.hidden = true;
    lastData = data;
    bars = data.candles.map(num);
    candles.setData(bars);
    volume.setData(data.candles.map((c, i) => volBar(bars[i], +c.volume)));
    const last = data.candles[data.candles.length - 1];
    volBase = 0; cur1m = null;
    if (last && interval !== "1m") volBase = +last.volume; // the stream adds the forming 1m candle's volume on top
    applyOverlays();
    rsi.setData(data.indicators.rsi.rsi || []);
    macdLine.setData(data.indicators.macd.macd || []);
    macdSignal.setData(data.indicators.macd.signal || []);
    macdHist.setData((data.indicators.macd.histogram || []).map(p => ({ ...p, color: p.value >= 0 ? "rgba(46,189,133,.6)" : "rgba(246,70,93,.6)" })));
    if (!keepView) {
      if (bars.length > 140) chart.timeScale().setVisibleLogicalRange({ from: bars.length - 140, to: bars.length + 4 });
      else { chart.timeScale().applyOptions({ maxBarSpacing: 22 }); chart.timeScale().fitContent(); }
    }
    chartEl.setAttribute("data-interval", interval);
    chartEl.setAttribute("data-candles", String(bars.length));
    chartEl.setAttribute("data-last-open-time", String(last ? last.time * 1000 : ""));
    chartEl.setAttribute("data-last-close", last ? last.close : "");
    showOHL(bars[bars.length - 1]);
    window.tmcpChart = { bars: () => bars.length, last: () => bars[bars.length - 1], interval: () => interval };
  }
  const reloadSoon = debounce(() => loadChart(true), 1500);

  function showOHL(b) { if (b) document.getElementById("mh-ohl").textContent = `${fmt(b.open, 2)} / ${fmt(b.high, 2)} / ${fmt(b.low, 2)}`; }

  // A kline_1m stream update (Binance kline event `k`): update the forming bar of the selected interval.
  function onKline(k) {
    if (!bars.length) return;
    const ivMs = IV_MS[interval];
    const t = Math.floor(k.t / ivMs) * ivMs / 1000;
    const last = bars[bars.length - 1];
    if (t < last.time) return;
    const o = +k.o, h = +k.h, l = +k.l, c = +k.c, v = +k.v;
    if (interval === "1m") {
      const bar = { time: t, open: o, high: h, low: l, close: c };
      if (t > last.time) { bars.push(bar); reloadSoon(); } else bars[bars.length - 1] = bar;
      candles.update(bar); volume.update(volBar(bar, v));
    } else {
      if (cur1m !== null && k.t !== cur1m.t) volBase += cur1m.v; // the previous 1m candle closed
      cur1m = { t: k.t, v };
      let bar;
      if (t > last.time) { bar = { time: t, open: o, high: h, low: l, close: c }; volBase = 0; bars.push(bar); reloadSoon(); }
      else { bar = { ...last, high: Math.max(last.high, h), low: Math.min(last.low, l), close: c }; bars[bars.length - 1] = bar; }
      candles.update(bar); volume.update(volBar(bar, volBase + v));
    }
    chartEl.setAttribute("data-candles", String(bars.length));
    chartEl.setAttribute("data-live-close", k.c);
    showOHL(bars[bars.length - 1]);
    setLast(k.c);
  }

  let prevLast = null;
  function setLast(price) {
    const n = document.getElementById("mh-last");
    n.textContent = fmt(price, 2);
    if (prevLast !== null) { n.classList.toggle("up", +price > prevLast); n.classList.toggle("down", +price < prevLast); }
    prevLast = +price;
    document.title = `${fmt(price, 2)} · ${SYMBOL} · TradingMCP`;
  }
  function onBook(b) {
    document.getElementById("mh-bid").textContent = fmt(b.bidPrice, 2);
    document.getElementById("mh-ask").textContent = fmt(b.askPrice, 2);
    document.getElementById("mh-spread").textContent = fmt(+b.askPrice - +b.bidPrice, 2);
    if (window.__tmcpLatency && b.receivedAt) window.__tmcpLatency.push(Date.now() - b.receivedAt);
  }

  // --- order book + trades (the venue's, cached ~1 s server-side; polled while the tab is visible) --
  function renderBook(m) {
    const maxTotal = Math.max(+(m.asks.at(-1)?.[2] || 0), +(m.bids.at(-1)?.[2] || 0), 1e-12);
    const row = (lvl, side) => el("tr", { class: "lvl " + side, style: `--depth:${(+lvl[2] / maxTotal * 100).toFixed(1)}%` }, [
      el("td", { class: "num " + (side === "ask" ? "ask" : "bid"), text: fmt(lvl[0], 2) }),
      el("td", { class: "num", text: fmt(lvl[1], 4, 6) }),
      el("td", { class: "num muted", text: fmt(lvl[2], 4, 4) }),
    ]);
    document.getElementById("asks").replaceChildren(...m.asks.slice(0, 12).reverse().map(l => row(l, "ask")));
    document.getElementById("bids").replaceChildren(...m.bids.slice(0, 12).map(l => row(l, "bid")));
    if (m.asks.length && m.bids.length) {
      const mid = (+m.asks[0][0] + +m.bids[0][0]) / 2, spread = +m.asks[0][0] - +m.bids[0][0];
      document.getElementById("book-mid").textContent = fmt(mid, 2, 2);
      document.getElementById("book-spread").textContent = `spread ${fmt(spread, 2)} (${(spread / mid * 1e4).toFixed(2)} bps)`;
    }
    document.getElementById("book-time").textContent = `update ${m.lastUpdateId}`;
    document.getElementById("trades").replaceChildren(...m.trades.slice(0, 18).map(t => el("tr", { "data-trade-id": String(t.id) }, [
      el("td", { class: "num " + (t.isBuyerMaker ? "ask" : "bid"), text: fmt(t.price, 2) }),
      el("td", { class: "num", text: fmt(t.qty, 4, 6) }),
      el("td", { class: "num muted", text: clock(t.time) }),
    ])));
  }
  async function pollMarket() {
    if (document.visibilityState === "visible") {
      try { renderBook(await getJSON(`/dashboard/api/market/${SYMBOL}/`)); } catch (e) { document.getElementById("book-time").textContent = e.message; }
    }
    setTimeout(pollMarket, 1500);
  }

  // --- my orders on this symbol -----------------------------------------------------------------
  const accountSel = document.getElementById("ticket-account");
  function myOrderRow(o) {
    return el("tr", { "data-order-id": String(o.orderId), "data-client-order-id": o.clientOrderId }, [
      el("td", { class: "muted", text: time(o.time) }),
      el("td", { class: "side-" + o.side, text: o.side }),
      el("td", { text: o.type }),
      el("td", { class: "num", text: fmt(o.origQty, 0) }),
      el("td", { class: "num", text: o.price ? fmt(o.price, 2) : "—" }),
      el("td", { class: "num", text: fmt(o.avgPrice, 2) }),
      el("td", { class: "status status-" + o.status, text: o.status, title: o.rejectReason || "" }),
      el("td", { class: "muted", text: o.channel }),
    ]);
  }
  async function loadMyOrders() {
    const tbody = document.querySelector("#myorders tbody");
    if (!accountSel.value) { tbody.replaceChildren(); return; }
    try {
      const r = await getJSON(`/api/v1/accounts/${accountSel.value}/orders?symbol=${SYMBOL}&limit=20`);
      tbody.replaceChildren(...r.orders.map(myOrderRow));
      document.getElementById("myorders-account").textContent = accountSel.selectedOptions[0]?.textContent || "";
    } catch (e) { /* shown empty; the next event refetches */ }
  }
  function onOrder(msg) {
    if (String(msg.account) !== accountSel.value) return;
    const tbody = document.querySelector("#myorders tbody");
    for (const o of msg.items || [msg.data]) {
      if (o.symbol !== SYMBOL) continue;
      const row = myOrderRow(o); row.classList.add("flash");
      const old = tbody.querySelector(`tr[data-order-id="${o.orderId}"]`);
      if (old) old.replaceWith(row); else tbody.prepend(row);
    }
  }

  // --- order ticket ------------------------------------------------------------------------------
  const form = document.getElementById("ticket");
  let side = "BUY";
  function syncTicket() {
    const type = form.type.value;
    form.querySelector(".price-field").hidden = type === "MARKET";
    form.querySelector(".stop-field").hidden = !type.startsWith("STOP") && !type.startsWith("TAKE");
    form.querySelector(".tif-field").hidden = !["LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"].includes(type);
    const btn = document.getElementById("ticket-submit");
    btn.className = "submit " + side.toLowerCase();
    btn.textContent = `${side === "BUY" ? "Buy" : "Sell"} ${cfg.baseAsset}`;
    const qty = +form.quantity.value, px = +form.price.value || prevLast;
    document.getElementById("ticket-est").textContent = qty && px ?
      `≈ ${fmt(qty * px, 2, 2)} ${cfg.quoteAsset} notional · min ${cfg.minNotional}` : `min notional ${cfg.minNotional} ${cfg.quoteAsset}`;
  }
  form.querySelectorAll(".side-btn").forEach(b => b.addEventListener("click", () => {
    side = b.dataset.side;
    form.querySelectorAll(".side-btn").forEach(x => x.classList.toggle("active", x === b));
    syncTicket();
  }));
  form.addEventListener("input", syncTicket);
  form.addEventListener("change", syncTicket);
  accountSel.addEventListener("change", loadMyOrders);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = document.getElementById("ticket-result");
    const btn = document.getElementById("ticket-submit");
    btn.disabled = true;
    out.className = "ticket-result pending"; out.textContent = "Placing…";
    const type = form.type.value;
    const body = { symbol: SYMBOL, side, type, quantity: form.quantity.value.trim() };
    if (type !== "MARKET") body.price = form.price.value.trim();
    if (!form.querySelector(".stop-field").hidden) body.stopPrice = form.stop_price.value.trim();
    if (!form.querySelector(".tif-field").hidden) body.timeInForce = form.time_in_force.value;
    try {
      const r = await postJSON(`/api/v1/accounts/${form.account_id.value}/orders`, body);
      if (r.ok) {
        const o = r.body;
        out.className = "ticket-result ok";
        out.textContent = `${o.side} ${o.type} ${fmt(o.origQty, 0)} ${o.symbol}: ${o.status}` +
          (o.avgPrice ? ` @ ${fmt(o.avgPrice, 2)}` : "") + ` (order ${o.orderId})`;
      } else {
        out.className = "ticket-result error";
        const reason = r.body.riskDecision ? r.body.riskDecision.reason : null;
        out.replaceChildren(...[el("strong", { text: reason ? "Rejected by risk check" : "Rejected" }),
          el("div", { text: reason || r.body.msg || `HTTP ${r.status}` }),
          r.body.nearestValid ? el("div", { class: "muted", text: `nearest valid: ${r.body.nearestValid}` }) : null].filter(Boolean));
      }
    } catch (e) { out.className = "ticket-result error"; out.textContent = e.message; }
    btn.disabled = false;
  });

  // --- wiring ------------------------------------------------------------------------------------
  document.querySelectorAll("#intervals button").forEach(b => b.addEventListener("click", () => {
    interval = b.dataset.interval;
    document.querySelectorAll("#intervals button").forEach(x => x.classList.toggle("active", x === b));
    loadChart(false);
  }));
  document.querySelectorAll("#overlays button").forEach(b => {
    overlays[b.dataset.overlay] = b.classList.contains("active");
    b.addEventListener("click", () => { b.classList.toggle("active"); overlays[b.dataset.overlay] = b.classList.contains("active"); applyOverlays(); });
  });

  syncTicket();
  loadChart(false);
  loadMyOrders();
  pollMarket();
  TMCP.connect({
    symbols: [SYMBOL],
    onMessage(msg) {
      if (msg.type === "market" && msg.symbol === SYMBOL) {
        if (msg.stream === "kline_1m") onKline(msg.data);
        else if (msg.stream === "bookTicker") onBook(msg.data);
      } else if (msg.type === "account" && msg.kind === "order") onOrder(msg);
    },
    onReconnect() { loadChart(true); loadMyOrders(); },
  });
})();
