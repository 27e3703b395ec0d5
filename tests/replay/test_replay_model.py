"""Pure tests of the tape loader, the replay clock and the market model (no server)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from replay import testing as rt
from replay.clock import ReplayClock
from replay.model import (
    TRADE_ID_BASE,
    UPDATE_ID_BASE,
    ReplayModel,
    UnknownInterval,
    UnknownSymbol,
    bucket_next,
    bucket_open,
)
from replay.tape import Tape, TapeError, load_tape, parse_kline_rows
from replay.wire import f8, kline_row

START = 1_800_000_012_345  # 2027-01-15T08:00:12.345Z


@pytest.fixture(scope="module")
def model():
    return ReplayModel(START, history_minutes=600)


# -- tape -------------------------------------------------------------------------------------------
def test_tapes_are_the_recorded_csvs():
    for symbol, minutes in (("BTCUSDT", 4320), ("ETHUSDT", 2880)):
        tape = load_tape(symbol)
        rows = rt.recorded_rows(symbol)
        assert tape.length == len(rows) == minutes
        for i in (0, 1, 777, minutes - 1):
            c, r = tape.candles[i], rows[i]
            assert c.open_time == int(r[0]) and c.close_time == int(r[6])
            assert (c.open, c.high, c.low, c.close, c.volume) == tuple(Decimal(x) for x in r[1:6])
            assert (c.quote_volume, c.trades, c.taker_buy_base, c.taker_buy_quote) == (
                Decimal(r[7]), int(r[8]), Decimal(r[9]), Decimal(r[10]))
            assert isinstance(c.open, Decimal) and isinstance(c.volume, Decimal)
    assert load_tape("BTCUSDT").candles[0].open_time == 1577836800000  # 2020-01-01T00:00Z


def test_microsecond_timestamps_are_normalised():
    # two real rows of data.binance.vision's 2026 format (µs): BTCUSDT 1h 2026-05-08
    rows = [
        "1778198400000000,80006.00000000,80142.84000000,79729.72000000,79831.99000000,958.06006000,"
        "1778201999999999,76636658.96208970,67626,559.85461000,44801546.15802500,0".split(","),
    ]
    (c,) = parse_kline_rows(rows)
    assert c.open_time == 1778198400000 and c.close_time == 1778201999999
    assert c.close == Decimal("79831.99")


def test_tape_rejects_a_gap():
    rows = rt.recorded_rows("BTCUSDT")[:3]
    candles = parse_kline_rows([rows[0], rows[2]])
    with pytest.raises(TapeError):
        Tape("BTCUSDT", candles)


# -- clock ------------------------------------------------------------------------------------------
class FakeTime:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_clock_speed_pause_resume_and_set_speed_are_continuous():
    mono = FakeTime()
    clock = ReplayClock(speed=60, start_wall_ms=1_000_000, monotonic=mono)
    assert clock.now_ms() == 1_000_000
    mono.t += 2  # 2 wall seconds at 60x = 120 replay seconds
    assert clock.now_ms() == 1_120_000
    clock.pause()
    mono.t += 10
    assert clock.now_ms() == 1_120_000 and clock.paused
    clock.resume()
    mono.t += 1
    assert clock.now_ms() == 1_180_000
    clock.set_speed(1)
    assert clock.now_ms() == 1_180_000
    mono.t += 0.5
    assert clock.now_ms() == 1_180_500
    assert clock.advance(60_000) == 1_240_500
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set_speed(0)


def test_clock_defaults_to_wall_now():
    import time

    before = int(time.time() * 1000)
    clock = ReplayClock()
    assert before <= clock.start_wall_ms <= int(time.time() * 1000)
    assert abs(clock.wall_ms() - time.time() * 1000) < 1000


# -- time shift and klines -----------------------------------------------------------------------------
def test_time_shift_puts_candle_600_at_the_start_minute(model):
    t0 = model.tape_start_ms("BTCUSDT")
    assert t0 == START - START % 60_000 - 600 * 60_000
    k = model.kline("BTCUSDT", "1m", START)
    assert k.open_time == START - START % 60_000
    rec = load_tape("BTCUSDT").candles[600]
    assert k.open == rec.open and not k.closed
    assert model.offset_ms("BTCUSDT") == t0 - 1577836800000


@pytest.mark.parametrize("symbol", ["ETHUSDT", "BTCUSDT"])
def test_closed_1m_klines_are_the_recording_on_todays_step(model, symbol):
    """Open, high, low, close and trade count are the recording's; volume and taker-buy volume the
    recorded ones rounded to the served stepSize (ETHUSDT's are on it already, BTCUSDT's 2020 ones
    have 6 decimals); quote volumes are the sums over the replayed trades, within 0.5 % of the
    recorded ones."""
    rows = rt.recorded_rows(symbol)
    step = model.spec(symbol).step_size
    t0 = model.tape_start_ms(symbol)
    ks = model.klines(symbol, "1m", START, start_time=t0, limit=600)
    assert len(ks) == 600 and all(k.closed for k in ks)
    shift = t0 - int(rows[0][0])
    on_step = 0
    for k, r in zip(ks, rows):
        assert k.open_time == int(r[0]) + shift and k.close_time == int(r[6]) + shift
        assert [f"{x:.8f}" for x in (k.open, k.high, k.low, k.close)] == [r[1], r[2], r[3], r[4]]
        assert k.trades == int(r[8]) == k.last_trade_id - k.first_trade_id + 1
        for got, rec in ((k.volume, Decimal(r[5])), (k.taker_buy_base, Decimal(r[9]))):
            assert got % step == 0 and abs(got - rec) <= step / 2
        on_step += k.volume == Decimal(r[5])
        for got, rec in ((k.quote_volume, Decimal(r[7])), (k.taker_buy_quote, Decimal(r[10]))):
            assert abs(got - rec) <= rec / 200
    assert on_step == 600 if symbol == "ETHUSDT" else on_step < 600


@pytest.mark.parametrize("interval,minutes", [("5m", 5), ("1h", 60), ("4h", 240)])
def test_aggregated_klines_match_an_independent_aggregation(model, interval, minutes):
    rows = rt.recorded_rows("BTCUSDT")
    t0 = model.tape_start_ms("BTCUSDT")
    shift = t0 - int(rows[0][0])
    ks = model.klines("BTCUSDT", interval, START + 4000 * 60_000, start_time=t0, limit=1000)
    closed = [k for k in ks if k.closed and (k.close_time + 1 - t0) // 60_000 <= len(rows)]
    assert len(closed) >= 10
    for k in closed[1:]:  # the first bucket starts at T0 mid-bucket
        first = (k.open_time - t0) // 60_000
        expected = rt.aggregate_rows(rows[first:first + minutes])
        expected[0] += shift
        expected[6] += shift
        ones = model.klines("BTCUSDT", "1m", START + 4000 * 60_000, start_time=k.open_time, limit=minutes)
        row = kline_row(k)
        assert row[:5] + row[6:7] + row[8:9] == expected[:5] + expected[6:7] + expected[8:9]  # OHLC, times, n
        assert row[5] == f8(sum(x.volume_e8 for x in ones)) and row[7] == f8(sum(x.quote_volume_e8 for x in ones))
        assert row[9] == f8(sum(x.taker_buy_base_e8 for x in ones))
        assert row[10] == f8(sum(x.taker_buy_quote_e8 for x in ones))
        assert (k.first_trade_id, k.last_trade_id) == (ones[0].first_trade_id, ones[-1].last_trade_id)


def test_forming_kline_is_the_trades_printed_so_far(model):
    minute = START - START % 60_000 + 5 * 60_000
    g0 = model.trade_index("BTCUSDT", minute)
    assert model.trade_at_index("BTCUSDT", g0).time == minute  # a minute's first trade prints at its open
    for s in (0, 7, 20, 33, 58):
        t = minute + s * 1000 + 500
        k = model.kline("BTCUSDT", "1m", t)
        trades = [model.trade_at_index("BTCUSDT", g) for g in range(g0, model.trade_index("BTCUSDT", t) + 1)]
        assert all(tr.time <= t for tr in trades) and model.trade_at_index("BTCUSDT", trades[-1].index + 1).time > t
        assert k.volume == sum(tr.qty for tr in trades)
        assert k.quote_volume == sum(tr.quote_qty for tr in trades)
        assert k.taker_buy_base == sum(tr.qty for tr in trades if not tr.is_buyer_maker)
        assert k.taker_buy_quote == sum(tr.quote_qty for tr in trades if not tr.is_buyer_maker)
        assert k.trades == len(trades) == k.last_trade_id - k.first_trade_id + 1
        assert k.high == max(tr.price for tr in trades) and k.low == min(tr.price for tr in trades)
        assert k.close == trades[-1].price and k.open == trades[0].price and not k.closed
        assert k.first_trade_id == trades[0].id and k.last_trade_id == trades[-1].id
    final = model.kline("BTCUSDT", "1m", minute + 59_999)
    rec = model.recorded_kline("BTCUSDT", minute)
    assert final.closed and (final.open, final.high, final.low, final.close, final.trades) == (
        rec.open, rec.high, rec.low, rec.close, rec.trades)
    assert (final.first_trade_id, final.last_trade_id) == (rec.first_trade_id, rec.last_trade_id)


def test_kline_buckets_follow_binance_alignment():
    t = 1_800_000_012_345  # Friday 2027-01-15
    assert bucket_open("1w", t) == 1_799_625_600_000  # Monday 2027-01-11T00:00Z
    assert bucket_open("1M", t) == 1_798_761_600_000  # 2027-01-01T00:00Z
    assert bucket_next("1M", 1_798_761_600_000) == 1_801_440_000_000  # 2027-02-01
    assert bucket_open("1d", t, tz_ms=8 * 3_600_000) == 1_799_942_400_000  # 2027-01-15T00:00+08:00
    with pytest.raises(UnknownInterval):
        bucket_open("1s", t)


def test_klines_endtime_and_limit(model):
    t0 = model.tape_start_ms("BTCUSDT")
    last = model.klines("BTCUSDT", "1m", START, limit=3)
    assert [k.open_time for k in last] == [START - START % 60_000 - 120_000 + i * 60_000 for i in range(3)]
    assert not last[-1].closed and last[0].closed
    until = model.klines("BTCUSDT", "1m", START, end_time=t0 + 10 * 60_000, limit=2)
    assert [k.open_time for k in until] == [t0 + 9 * 60_000, t0 + 10 * 60_000]
    assert model.klines("BTCUSDT", "1m", START, start_time=START + 3_600_000) == []
    assert model.klines("BTCUSDT", "1m", START, start_time=t0 + 120_000, end_time=t0) == []
    with pytest.raises(UnknownSymbol):
        model.klines("XRPUSDT", "1m", START)


# -- trades --------------------------------------------------------------------------------------------
def test_trades_of_a_minute_are_the_recorded_count_on_the_step_summing_to_the_volume(model):
    spec = model.spec("BTCUSDT")
    tape = load_tape("BTCUSDT")
    t0 = model.tape_start_ms("BTCUSDT")
    g0 = 0
    for m in range(4320):
        rec = tape.candles[m]
        if m in (0, 1, 599, 4319):
            trades = [model.trade_at_index("BTCUSDT", g0 + k) for k in range(rec.trades)]
            assert abs(sum(t.qty for t in trades) - rec.volume) <= spec.step_size / 2
            assert abs(sum(t.qty for t in trades if not t.is_buyer_maker) - rec.taker_buy_base) <= spec.step_size / 2
            assert all(t.qty % spec.step_size == 0 and t.qty > 0 for t in trades)
            assert all(t.price % spec.tick_size == 0 for t in trades)
            assert [t.id for t in trades] == list(range(TRADE_ID_BASE + g0, TRADE_ID_BASE + g0 + rec.trades))
            assert all(t0 + m * 60_000 <= t.time < t0 + (m + 1) * 60_000 for t in trades)
            assert all(a.time <= b.time for a, b in zip(trades, trades[1:]))
            prices = [t.price for t in trades]
            assert prices[0] == rec.open and prices[-1] == rec.close
            assert max(prices) == rec.high and min(prices) == rec.low
            assert model.trade_at_index("BTCUSDT", g0 + rec.trades).time == t0 + (m + 1) * 60_000
        g0 += rec.trades


def test_tape_loops_with_shifted_time_and_continuing_ids(model):
    tape = load_tape("ETHUSDT")
    t0 = model.tape_start_ms("ETHUSDT")
    lap1 = t0 + tape.length_ms
    k = model.recorded_kline("ETHUSDT", lap1)
    assert k.open == tape.candles[0].open and k.volume == tape.candles[0].volume
    assert k.first_trade_id == TRADE_ID_BASE + sum(c.trades for c in tape.candles)
    # the aggregated view agrees across the boundary
    both = model.klines("ETHUSDT", "1m", lap1 + 90_000, start_time=lap1 - 60_000, limit=2)
    assert both[0].close == tape.candles[-1].close and both[1].open == tape.candles[0].open
    assert model.last_trade("ETHUSDT", lap1).price == tape.candles[0].open


# -- book ----------------------------------------------------------------------------------------------
def test_book_ticker_and_depth_follow_the_trade_price(model):
    for symbol in model.symbols:
        tick = model.spec(symbol).tick_size
        t0 = model.tape_start_ms(symbol)
        for dt in (0, 1234, 61_000, 3_600_000):
            t = START + dt
            bt = model.book_ticker(symbol, t)
            assert bt.bid_price == model.last_trade(symbol, t - t % 1000).price  # the book of the second
            assert bt.ask_price - bt.bid_price == tick * model.spread_ticks(symbol) == tick  # 1 tick recorded
            assert bt.update_id == UPDATE_ID_BASE + model.book_index(symbol, t) == UPDATE_ID_BASE + (t - t0) // 1000
            d = model.depth(symbol, t, 5000)
            assert len(d.bids) == len(d.asks) == 5000
            assert d.bids[0][0] == bt.bid_price and d.asks[0][0] == bt.ask_price
            assert d.bids[0][1] == bt.bid_qty and d.asks[0][1] == bt.ask_qty
            assert all(a[0] > b[0] for a, b in zip(d.bids, d.bids[1:]))
            assert all(a[0] < b[0] for a, b in zip(d.asks, d.asks[1:]))
            assert all(p % tick == 0 and q > 0 for p, q in d.bids + d.asks)
            assert d.last_update_id == bt.update_id


def test_depth_diffs_rebuild_the_book_with_binance_algorithm(model):
    """Binance "How to manage a local order book correctly", driven by the model's events."""
    symbol = "BTCUSDT"
    g = model.book_index(symbol, START)
    snap = model.depth_at_second(symbol, g, 5000)
    bids = dict(snap.bid_levels)
    asks = dict(snap.ask_levels)
    last_u = snap.last_update_id
    every = [model.depth_update(symbol, k) for k in range(g - 3, g + 90)]
    # as streamed: seconds whose book did not change send nothing (Binance sends no empty diffs)
    events = [e for e in every if (e.bid_changes or e.ask_changes) and e.final_update_id > snap.last_update_id]
    assert len(events) < len([e for e in every if e.final_update_id > snap.last_update_id])
    assert events[0].first_update_id <= snap.last_update_id + 1 <= events[0].final_update_id
    moved = 0
    for e in events:
        assert e is events[0] or e.first_update_id == last_u + 1  # each later event chains on the last
        for book, changes in ((bids, e.bid_changes), (asks, e.ask_changes)):
            for p, q in changes:
                if q == 0:
                    book.pop(p, None)
                else:
                    book[p] = q
        last_u = e.final_update_id
        moved += bool(e.bid_changes)
    assert moved > 5  # the price moved during those 90 seconds
    expected = model.depth_at_second(symbol, g + 89, 5000)
    assert sorted(bids.items(), reverse=True) == list(expected.bid_levels)
    assert sorted(asks.items()) == list(expected.ask_levels)


# -- tickers -------------------------------------------------------------------------------------------
def test_ticker_24h_over_the_available_window(model):
    t = START + 30_500
    tk = model.ticker_24h("BTCUSDT", t)
    t0 = model.tape_start_ms("BTCUSDT")
    assert tk.open_time == t0  # only 10 h of replay exists: the window starts at T0
    assert tk.first_id == TRADE_ID_BASE and tk.last_id == model.last_trade("BTCUSDT", t).id
    assert tk.count == tk.last_id - tk.first_id + 1
    ks = model.klines("BTCUSDT", "1m", t, start_time=t0, limit=1000)
    assert tk.volume == sum(k.volume for k in ks)
    assert tk.high_price == max(k.high for k in ks) and tk.low_price == min(k.low for k in ks)
    assert tk.open_price == ks[0].open and tk.last_price == ks[-1].close
    assert tk.price_change == tk.last_price - tk.open_price
    # a day later the window is a full, rolling 24 h
    later = t + 2 * 86_400_000 + 12_000
    tk2 = model.ticker_24h("BTCUSDT", later)
    assert tk2.open_time == later - 86_400_000
    assert model.trade_at_index("BTCUSDT", tk2.first_id - TRADE_ID_BASE - 1).time < tk2.open_time
    assert model.trade_at_index("BTCUSDT", tk2.first_id - TRADE_ID_BASE).time >= tk2.open_time
    assert tk2.open_price == model.trade_at_index("BTCUSDT", tk2.first_id - TRADE_ID_BASE).price
    ap = model.avg_price("BTCUSDT", t)
    window = model.trades_between("BTCUSDT", t, t - 300_000, t, 1000)
    assert ap.mins == 5 and abs(ap.price - sum(x.price * x.qty for x in window) / sum(x.qty for x in window)) < Decimal("1")


def test_two_models_with_the_same_start_agree():
    a, b = ReplayModel(START), ReplayModel(START)
    t = START + 123_456
    assert a.book_ticker("ETHUSDT", t) == b.book_ticker("ETHUSDT", t)
    assert a.klines("ETHUSDT", "15m", t, limit=50) == b.klines("ETHUSDT", "15m", t, limit=50)
