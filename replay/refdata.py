"""Recorded reference data: the real exchangeInfo and real depth snapshots.

* ``exchangeInfo-2021-10-12.json.gz``: the complete ``GET /api/v3/exchangeInfo`` response Binance
  served on 2021-10-12 (1,695 symbols). The replay serves the entries of the replayed symbols
  verbatim (status, precisions, orderTypes, filters, permissions) and takes from them the
  ``PRICE_FILTER.tickSize`` (price grid of every derived price) and ``LOT_SIZE.stepSize``
  (grid of derived trade quantities). Newer filter names (``NOTIONAL``,
  ``PERCENT_PRICE_BY_SIDE``) are read too when a newer file is dropped in.
* ``depth/api_v1_depth_<SYMBOL>_limit1000_2021-04-04.json``: real 1000x1000 order-book snapshots.
  Only their *shape* is used (Binance does not publish historical books): each level's distance
  from the best price as a fraction of the snapshot's mid, each level's size, the best-bid/ask
  spread in ticks, and the top-of-book sizes. See ``model.py`` for how the shape is re-centred.
* ``aggTrades/<SYMBOL>-aggTrades-from-ws_2021-04-04.csv``: ~90 s of real aggregate trades (the
  ``@aggTrade`` stream, data.binance.vision aggTrades CSV columns). The recording does not overlap
  any replayed tape's dates, so only its *flow* is used (:class:`TradeFlow`): the taker-buy and
  taker-sell order sizes in the order they came, and the times between trades.

All prices are parsed as exact decimals (kept as E8 integers, units of 1e-8 of the quote asset);
sizes are in the base asset.
"""
from __future__ import annotations

import copy
import csv
import gzip
import json
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from math import gcd
from pathlib import Path

from .tape import DATA_DIR, E8, to_e8

EXCHANGE_INFO_FILE = "exchangeInfo-2021-10-12.json.gz"

#: symbol -> recorded depth snapshot used for the book's shape and spread (relative to DATA_DIR).
DEPTH_FILES: dict[str, str] = {
    "BTCUSDT": "depth/api_v1_depth_BTCUSDT_limit1000_2021-04-04.json",
    "ETHUSDT": "depth/api_v1_depth_ETHUSDT_limit1000_2021-04-04.json",
}
#: snapshot used for a replayed symbol that has no snapshot of its own.
FALLBACK_DEPTH_SYMBOL = "BTCUSDT"

#: symbol -> recorded aggTrades (relative to DATA_DIR) whose flow shapes the replayed trades.
AGG_TRADE_FILES: dict[str, str] = {
    "BTCUSDT": "aggTrades/BTCUSDT-aggTrades-from-ws_2021-04-04.csv",
    "ETHUSDT": "aggTrades/ETHUSDT-aggTrades-from-ws_2021-04-04.csv",
}
#: aggTrades used for a replayed symbol that has no recording of its own.
FALLBACK_FLOW_SYMBOL = "BTCUSDT"


@lru_cache(maxsize=None)
def _load_exchange_info(data_dir: str) -> dict:
    with gzip.open(Path(data_dir) / EXCHANGE_INFO_FILE, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def exchange_info(data_dir: str | None = None) -> dict:
    """The recorded full exchangeInfo document (a deep copy; safe to modify)."""
    return copy.deepcopy(_load_exchange_info(str(data_dir or DATA_DIR)))


@lru_cache(maxsize=None)
def _symbol_entries(data_dir: str) -> dict[str, dict]:
    return {s["symbol"]: s for s in _load_exchange_info(data_dir)["symbols"]}


def symbol_entry(symbol: str, data_dir: str | None = None) -> dict:
    """The recorded exchangeInfo ``symbols[]`` entry of ``symbol`` (deep copy). KeyError if absent."""
    return copy.deepcopy(_symbol_entries(str(data_dir or DATA_DIR))[symbol])


#: What every served symbol allows today (Binance "Exchange information" example, spot API docs
#: 2026): the recorded 2021 entries predate these fields.
ORDER_TYPES = ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]
STP_MODES = ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"]
MAX_NOTIONAL = "9000000.00000000"


def current_entry(entry: dict) -> dict:
    """A recorded 2021 ``symbols[]`` entry in today's schema (a new dict; values from the recording).

    Binance "Filters" as migrated in 2023: ``MIN_NOTIONAL`` {minNotional, applyToMarket,
    avgPriceMins} becomes ``NOTIONAL`` {minNotional, applyMinToMarket, maxNotional,
    applyMaxToMarket, avgPriceMins}; ``PERCENT_PRICE`` {multiplierUp, multiplierDown, avgPriceMins}
    becomes ``PERCENT_PRICE_BY_SIDE`` with the same multipliers for bids and asks; a
    ``TRAILING_DELTA`` filter is added. Fields added since: ``otoAllowed``, ``opoAllowed``,
    ``allowTrailingStop``, ``cancelReplaceAllowed``, ``amendAllowed``, ``pegInstructionsAllowed``,
    ``permissionSets`` (the recorded ``permissions`` as one set; ``permissions`` is now empty),
    ``defaultSelfTradePreventionMode`` (EXPIRE_MAKER) and ``allowedSelfTradePreventionModes``;
    ``orderTypes`` lists all seven spot types (STOP_LOSS and TAKE_PROFIT came to spot after 2021).
    """
    filters = []
    for f in entry.get("filters", []):
        kind = f.get("filterType")
        if kind == "MIN_NOTIONAL":
            filters.append({"filterType": "NOTIONAL", "minNotional": f["minNotional"],
                            "applyMinToMarket": f.get("applyToMarket", True), "maxNotional": MAX_NOTIONAL,
                            "applyMaxToMarket": False, "avgPriceMins": f.get("avgPriceMins", 5)})
        elif kind == "PERCENT_PRICE":
            up, down = f["multiplierUp"], f["multiplierDown"]
            filters.append({"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": up, "bidMultiplierDown": down,
                            "askMultiplierUp": up, "askMultiplierDown": down, "avgPriceMins": f.get("avgPriceMins", 5)})
        else:
            filters.append(dict(f))
    if not any(f.get("filterType") == "TRAILING_DELTA" for f in filters):
        filters.append({"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
                        "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000})
    out = {k: v for k, v in entry.items() if k not in ("filters", "permissions")}
    out.update({
        "orderTypes": list(ORDER_TYPES), "icebergAllowed": entry.get("icebergAllowed", True),
        "ocoAllowed": entry.get("ocoAllowed", True), "otoAllowed": True, "opoAllowed": True,
        "quoteOrderQtyMarketAllowed": entry.get("quoteOrderQtyMarketAllowed", True), "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "amendAllowed": True, "pegInstructionsAllowed": False,
        "isSpotTradingAllowed": entry.get("isSpotTradingAllowed", True),
        "isMarginTradingAllowed": entry.get("isMarginTradingAllowed", False),
        "filters": filters, "permissions": [], "permissionSets": [list(entry.get("permissions", ["SPOT"]))],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER", "allowedSelfTradePreventionModes": list(STP_MODES),
    })
    return out


def _filter(entry: dict, ftype: str) -> dict | None:
    for f in entry.get("filters", []):
        if f.get("filterType") == ftype:
            return f
    return None


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """Trading rules of a replayed symbol, from the recorded exchangeInfo.

    ``tick_size``: PRICE_FILTER.tickSize (quote asset); ``step_size``: LOT_SIZE.stepSize (base
    asset); ``tick_e8``/``step_e8``: the same in units of 1e-8. ``min_notional``: MIN_NOTIONAL or
    NOTIONAL ``minNotional`` (quote asset) or None.
    """

    symbol: str
    base_asset: str
    quote_asset: str
    tick_size: Decimal
    step_size: Decimal
    tick_e8: int
    step_e8: int
    min_notional: Decimal | None


def symbol_spec(symbol: str, data_dir: str | None = None) -> SymbolSpec:
    """Build the :class:`SymbolSpec` of ``symbol`` from the recorded exchangeInfo."""
    entry = _symbol_entries(str(data_dir or DATA_DIR))[symbol]
    pf = _filter(entry, "PRICE_FILTER")
    lot = _filter(entry, "LOT_SIZE")
    notional = _filter(entry, "MIN_NOTIONAL") or _filter(entry, "NOTIONAL")
    tick = Decimal(pf["tickSize"]) if pf else Decimal("0.00000001")
    step = Decimal(lot["stepSize"]) if lot else Decimal("0.00000001")
    if tick <= 0:
        tick = Decimal("0.00000001")
    if step <= 0:
        step = Decimal("0.00000001")
    return SymbolSpec(
        symbol=symbol,
        base_asset=entry["baseAsset"],
        quote_asset=entry["quoteAsset"],
        tick_size=tick,
        step_size=step,
        tick_e8=to_e8(tick),
        step_e8=to_e8(step),
        min_notional=Decimal(notional["minNotional"]) if notional else None,
    )


@dataclass(frozen=True, slots=True)
class BookShape:
    """Shape of a recorded order book, independent of its price level.

    ``bid_offsets_e8``/``ask_offsets_e8``: per level, distance from that side's best price
    (``best_bid - price`` for bids, ``price - best_ask`` for asks) in units of 1e-8 of the quote
    asset, best level first (offset 0). ``mid2_e8``: twice the snapshot mid (``best_bid +
    best_ask``) in 1e-8 units; an offset's fraction of the price is ``offset / (mid2 / 2)``.
    ``bid_sizes_e8``/``ask_sizes_e8``: recorded level sizes (base asset, 1e-8 units).
    ``spread_e8``: recorded ``best_ask - best_bid``. ``source``: file it came from;
    ``last_update_id``: the snapshot's recorded ``lastUpdateId``.
    """

    source: str
    last_update_id: int
    bid_offsets_e8: tuple[int, ...]
    ask_offsets_e8: tuple[int, ...]
    bid_sizes_e8: tuple[int, ...]
    ask_sizes_e8: tuple[int, ...]
    mid2_e8: int
    spread_e8: int

    def spread_ticks(self, tick_e8: int) -> int:
        """Recorded spread in ticks of ``tick_e8`` (rounded up, at least 1)."""
        return max(1, -(-self.spread_e8 // tick_e8))


@lru_cache(maxsize=None)
def book_shape(symbol: str, data_dir: str | None = None) -> BookShape:
    """Load the :class:`BookShape` for ``symbol`` (its own snapshot, else the fallback's)."""
    rel = DEPTH_FILES.get(symbol) or DEPTH_FILES[FALLBACK_DEPTH_SYMBOL]
    path = Path(data_dir or DATA_DIR) / rel
    with open(path, encoding="utf-8") as fh:
        snap = json.load(fh)
    bids = [(to_e8(p), to_e8(q)) for p, q in snap["bids"]]
    asks = [(to_e8(p), to_e8(q)) for p, q in snap["asks"]]
    bids.sort(key=lambda x: -x[0])
    asks.sort(key=lambda x: x[0])
    b0, a0 = bids[0][0], asks[0][0]
    if a0 <= b0:
        raise ValueError(f"{path}: crossed snapshot (bid {b0} >= ask {a0})")
    return BookShape(
        source=rel,
        last_update_id=int(snap["lastUpdateId"]),
        bid_offsets_e8=tuple(b0 - p for p, _ in bids),
        ask_offsets_e8=tuple(p - a0 for p, _ in asks),
        bid_sizes_e8=tuple(q for _, q in bids),
        ask_sizes_e8=tuple(q for _, q in asks),
        mid2_e8=b0 + a0,
        spread_e8=a0 - b0,
    )


@dataclass(frozen=True, slots=True)
class TradeFlow:
    """The order flow of a recorded ``@aggTrade`` session, independent of its price level.

    ``buy_weights``/``sell_weights``: the sizes of the recorded taker-buy (``m`` false) and
    taker-sell (``m`` true) aggregate trades in the order they came, as positive integers (the
    recorded quantities divided by their greatest common divisor: only their ratios matter).
    ``gaps_ms``: one per recorded trade (``l - f + 1`` per aggregate), the milliseconds from that
    trade to the next: 0 inside an aggregate (one taker order filling several makers), then the
    time to the next aggregate (the last one wraps to 0). ``source``: the file it came from.
    """

    source: str
    buy_weights: tuple[int, ...]
    sell_weights: tuple[int, ...]
    gaps_ms: tuple[int, ...]


@lru_cache(maxsize=None)
def trade_flow(symbol: str, data_dir: str | None = None) -> TradeFlow:
    """Load the :class:`TradeFlow` for ``symbol`` (its own aggTrades, else the fallback's)."""
    rel = AGG_TRADE_FILES.get(symbol) or AGG_TRADE_FILES[FALLBACK_FLOW_SYMBOL]
    path = Path(data_dir or DATA_DIR) / rel
    rows = []
    with open(path, newline="", encoding="ascii") as fh:
        for r in csv.reader(fh):  # agg_id, price, qty, first_id, last_id, time_ms, is_buyer_maker, best
            rows.append((to_e8(r[2]), int(r[4]) - int(r[3]) + 1, int(r[5]), r[6].strip().lower() == "true"))
    rows.sort(key=lambda x: x[2])
    g = 0
    for q, *_ in rows:
        g = gcd(g, q)
    g = g or 1
    buys = tuple(q // g for q, _, _, maker in rows if not maker and q > 0)
    sells = tuple(q // g for q, _, _, maker in rows if maker and q > 0)
    gaps: list[int] = []
    for j, (_, count, t, _) in enumerate(rows):
        nxt = rows[j + 1][2] if j + 1 < len(rows) else t
        gaps.extend([0] * (count - 1))
        gaps.append(max(0, nxt - t))
    if not buys or not sells or not any(gaps):
        raise ValueError(f"{path}: needs taker buys, taker sells and trades at different times")
    return TradeFlow(source=rel, buy_weights=buys, sell_weights=sells, gaps_ms=tuple(gaps))


__all__ = [
    "AGG_TRADE_FILES",
    "DEPTH_FILES",
    "TradeFlow",
    "trade_flow",
    "E8",
    "BookShape",
    "SymbolSpec",
    "book_shape",
    "exchange_info",
    "symbol_entry",
    "symbol_spec",
]
