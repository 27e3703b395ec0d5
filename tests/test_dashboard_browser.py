"""The dashboard in a real browser (Debian's Chromium via Playwright) against the running stack
(web server, ingester, replay exchange): log in; live prices; an agent's MCP fill appears in the
orders table and the activity feed without a reload; the chart draws the replayed candles; the order
ticket places an order and shows a risk rejection inline; the kill switch halts trading and the next
MCP order is refused; user B's browser never receives user A's events. Screenshots of every page go
to test-artifacts/."""
import asyncio
import os
import shutil

import pytest

from conftest import ARTIFACTS, wait_until
from core.redis import get_redis
from marketdata.cache import book_key
from marketdata.services import exchange_info_sync
from risk.models import RiskLimit

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed (scripts/test installs it)"),
]


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.browser_handle = browser
        # The Content-Security-Policy allows the site's own scripts and styles only: Chromium logs
        # each thing it refused; none may be ours.
        # (The reconnect test's stand-in for a dead server, ws://127.0.0.1:9/, is refused too: rightly.)
        violations = []
        page.on("console", lambda m: violations.append(m.text)
                if "Content Security Policy" in m.text and "ws://127.0.0.1:9/" not in m.text else None)
        yield page
        browser.close()
        assert not violations, violations


def run_in_thread(coro_fn, *args):
    """Playwright's sync API keeps an event loop running in this thread: run asyncio code beside it."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro_fn(*args)).result(timeout=60)


async def agent_call(base_url: str, token: str, tool: str, args: dict):
    """One MCP tool call with the official SDK client; returns the CallToolResult."""
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    http = httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, streamable_http_client(f"{base_url}/mcp", http_client=http) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await session.call_tool(tool, args)


def login(page, base_url: str, username: str = "alice", path: str = "/"):
    page.goto(base_url + path)
    assert "/login/" in page.url
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "pw-for-tests-1")
    page.click("button[type=submit]")
    page.wait_for_url(base_url + path)
    page.wait_for_function("() => window.tmcpSocketReady === true", timeout=15000)


@pytest.fixture
def live(stack, trader, monkeypatch):
    """The stack with exchangeInfo synced and the first quote cached; (stack, user, account, token)."""
    # Playwright's sync API runs an event loop in this thread; our DB calls here are plain sync.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    user, account, token = trader
    exchange_info_sync()
    wait_until(lambda: get_redis().get(book_key("BTCUSDT")), timeout=20, what="a BTCUSDT quote")
    ARTIFACTS.mkdir(exist_ok=True)
    return stack, user, account, token


def test_login_live_prices_and_an_mcp_fill_without_reload(live, browser_page):
    from test_e2e import agent_buys

    from trading.portfolio import snapshot_take

    stack, user, account, token = live
    RiskLimit.objects.filter(account=account).update(max_daily_loss=50, max_total_exposure=1000, max_open_orders=5,
                                                     max_orders_per_minute=20, max_order_notional=500)
    snapshot_take(account=account)
    page = browser_page
    page.goto(stack.base_url + "/")
    assert "/login/" in page.url
    page.screenshot(path=str(ARTIFACTS / "login.png"))
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "pw-for-tests-1")
    page.click("button[type=submit]")
    page.wait_for_url(stack.base_url + "/")
    page.wait_for_function("() => window.tmcpSocketReady === true", timeout=15000)
    assert page.locator("#conn-state").text_content() == "live"
    page.wait_for_function("() => document.querySelector('.ticker[data-symbol=\"BTCUSDT\"] [data-field=\"ask\"]').textContent !== '—'", timeout=15000
    )
    ask = page.locator('.ticker[data-symbol="BTCUSDT"] [data-field="ask"]')
    assert float(ask.text_content().replace(",", "")) > 1000
    assert page.locator(f"#account-{account.pk} .risk-state").text_content() == "ACTIVE"
    page.evaluate("window.__marker = 'no-reload'")

    run_in_thread(agent_buys, stack.base_url, token)
    row = page.locator(f'#account-{account.pk} table.orders tr[data-client-order-id="e2e-buy-1"]')
    row.wait_for(timeout=15000)
    assert "FILLED" in row.text_content() and "BUY" in row.text_content() and "mcp" in row.text_content()
    btc = page.locator(f'#account-{account.pk} table.balances tr[data-asset="BTC"]')
    btc.wait_for(timeout=15000)
    assert "0.001998" in btc.text_content()
    # The activity feed shows the agent's call: token, tool, arguments, outcome and risk verdict.
    item = page.locator('#activity li[data-action="order.place"]').first
    item.wait_for(timeout=15000)
    text = item.text_content()
    assert "alice-agent" in text and "place_order" in text and "e2e-buy-1" in text and "ok" in text
    assert "risk ✓" in text
    page.locator(f'#account-{account.pk} table.positions tr[data-position="BTCUSDT"]').wait_for(timeout=15000)
    page.locator(f'#account-{account.pk} table.fills tbody tr[data-fill-id]').first.wait_for(timeout=15000)
    assert page.evaluate("window.__marker") == "no-reload"
    exposure = page.locator(f'#account-{account.pk} [data-limit="max_total_exposure"]')
    wait_until(lambda: "14." in exposure.text_content(), timeout=15, what="the exposure usage to follow the fill")
    snapshot_take(account=account)
    page.reload()
    page.wait_for_function("() => window.tmcpSocketReady === true", timeout=15000)
    assert page.locator(f"#account-{account.pk} .pf-chart").get_attribute("data-points") == "2"
    page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)


def test_market_chart_renders_replayed_candles_and_the_ticket_trades(live, browser_page):
    from marketdata.binance import make_client
    from trading.models import Order

    stack, user, account, token = live
    page = browser_page
    login(page, stack.base_url, path="/market/BTCUSDT/")
    page.wait_for_function("() => Number(document.getElementById('chart').dataset.candles || 0) >= 30", timeout=30000)
    assert page.locator("#chart canvas").count() > 0 and page.locator("#chart canvas").first.bounding_box()["width"] > 300
    # The drawn candles are the replayed real data: pick a closed candle and compare with the venue.
    bar = page.evaluate("(() => { const b = window.tmcpChart; return {n: b.bars(), last: b.last()}; })()")
    chart = page.evaluate("fetch('/dashboard/api/chart/BTCUSDT/?interval=1m&limit=500').then(r => r.json())")
    closed = [c for c in chart["candles"] if c["closed"]]
    probe = closed[-2]
    venue = make_client().get_klines(symbol="BTCUSDT", interval="1m", startTime=probe["time"] * 1000, limit=1)[0]
    assert (venue[1], venue[2], venue[3], venue[4]) == (probe["open"], probe["high"], probe["low"], probe["close"])
    assert bar["n"] >= len(closed) and bar["last"]["time"] >= probe["time"]
    # The forming candle follows the kline_1m stream.
    page.wait_for_function("() => document.getElementById('chart').dataset.liveClose !== undefined", timeout=20000)
    page.locator("#asks tr").first.wait_for(timeout=15000)
    page.locator("#trades tr").first.wait_for(timeout=15000)
    page.screenshot(path=str(ARTIFACTS / "market-btcusdt.png"), full_page=True)

    # Order ticket: a market buy fills; a too-large one is refused by the risk check, inline.
    RiskLimit.objects.filter(account=account).update(max_order_notional=50)
    page.fill("input[name=quantity]", "0.002")
    page.click("#ticket-submit")
    page.wait_for_selector("#ticket-result.ok", timeout=15000)
    assert "FILLED" in page.locator("#ticket-result").text_content()
    page.locator("#myorders tbody tr").first.wait_for(timeout=15000)
    assert "dashboard" in page.locator("#myorders tbody tr").first.text_content()
    page.fill("input[name=quantity]", "0.01")
    page.click("#ticket-submit")
    page.wait_for_selector("#ticket-result.error", timeout=15000)
    text = page.locator("#ticket-result").text_content()
    assert "Rejected by risk check" in text and "max_order_notional" in text and "exceeds the limit of 50 USDT" in text
    statuses = list(Order.objects.filter(account=account, channel="dashboard").order_by("id").values_list("status", flat=True))
    assert statuses == ["FILLED", "REJECTED"]
    page.screenshot(path=str(ARTIFACTS / "market-ticket-rejected.png"), full_page=True)

    page.click('#intervals button[data-interval="1h"]')
    page.wait_for_function("() => document.getElementById('chart').dataset.interval === '1h'", timeout=20000)
    assert int(page.locator("#chart").get_attribute("data-candles")) >= 5
    page.screenshot(path=str(ARTIFACTS / "market-btcusdt-1h.png"))


def test_kill_switch_halts_and_the_next_mcp_order_is_refused(live, browser_page):
    stack, user, account, token = live
    page = browser_page
    login(page, stack.base_url)
    page.on("dialog", lambda d: d.accept())
    page.click(f"#account-{account.pk} .kill-switch")
    page.wait_for_function(f"() => document.querySelector('#account-{account.pk} .risk-state').textContent === 'HALTED'", timeout=15000)
    assert page.locator(f'#banners [data-banner="HALTED"]').count() == 1
    assert RiskLimit.objects.get(account=account).trading_state == "HALTED"

    result = run_in_thread(agent_call, stack.base_url, token, "place_order",
                           {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": "after-halt"})
    assert result.isError and "HALTED" in result.content[0].text
    item = page.locator('#activity li[data-action="order.place"][data-outcome="rejected"]').first
    item.wait_for(timeout=15000)
    assert "HALTED" in item.text_content() and "alice-agent" in item.text_content()
    row = page.locator(f'#account-{account.pk} table.orders tr[data-client-order-id="after-halt"]')
    row.wait_for(timeout=15000)
    assert "REJECTED" in row.text_content()
    page.screenshot(path=str(ARTIFACTS / "dashboard-halted.png"), full_page=True)

    page.click(f"#account-{account.pk} .resume")
    page.wait_for_function(f"() => document.querySelector('#account-{account.pk} .risk-state').textContent === 'ACTIVE'", timeout=15000)
    assert RiskLimit.objects.get(account=account).trading_state == "ACTIVE"


def test_user_b_browser_never_receives_user_a_events(live, browser_page, make_user):
    from test_e2e import agent_buys
    from trading.services import account_create

    stack, user, account, token = live
    bob = make_user("bob")
    bob_account = account_create(owner=bob, name="Bob paper")
    alice_page = browser_page
    bob_page = browser_page.browser_handle.new_page(viewport={"width": 1440, "height": 900})
    frames = []
    bob_page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)))
    login(bob_page, stack.base_url, "bob")
    login(alice_page, stack.base_url, "alice")

    run_in_thread(agent_buys, stack.base_url, token)
    alice_page.locator(f'#account-{account.pk} table.orders tr[data-client-order-id="e2e-buy-1"]').wait_for(timeout=15000)
    alice_page.locator('#activity li[data-action="order.place"]').first.wait_for(timeout=15000)
    # Bob's socket kept receiving market data meanwhile (so it was recording), but nothing of Alice's.
    bob_page.wait_for_function("() => document.querySelector('.ticker[data-symbol=\"BTCUSDT\"] [data-field=\"ask\"]').textContent !== '—'", timeout=15000)
    n = len(frames)
    for _ in range(150):  # Playwright dispatches events only while its API is called: wait through it
        if len(frames) > n + 2:
            break
        bob_page.wait_for_timeout(100)
    assert len(frames) > n + 2, "Bob's socket stopped receiving market data"
    texts = [f if isinstance(f, str) else f.decode() for f in frames]
    assert any('"type": "market"' in t or '"type":"market"' in t for t in texts)
    assert not [t for t in texts if "e2e-buy-1" in t or "alice" in t or f'"account": {account.pk}' in t]
    assert "e2e-buy-1" not in bob_page.content() and "alice-agent" not in bob_page.content()
    assert bob_page.locator(f"#account-{bob_account.pk}").count() == 1 and bob_page.locator(f"#account-{account.pk}").count() == 0
    bob_page.screenshot(path=str(ARTIFACTS / "dashboard-user-b.png"), full_page=True)


def test_tokens_page_creates_a_token_shown_once_that_works_over_mcp(live, browser_page):
    from risk.services import agent_token_authenticate

    stack, user, account, token = live
    page = browser_page
    page.goto(stack.base_url + "/tokens/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "pw-for-tests-1")
    page.click("button[type=submit]")
    page.wait_for_url(stack.base_url + "/tokens/")
    page.fill("#token-form input[name=name]", "claude-code")
    page.click("#token-form button[type=submit]")
    key = page.locator("#new-token").text_content().strip()
    assert key.startswith("tmcp_") and agent_token_authenticate(key=key).name == "claude-code"
    assert key in page.locator("#cfg-desktop").text_content()
    page.screenshot(path=str(ARTIFACTS / "tokens.png"), full_page=True)
    result = run_in_thread(agent_call, stack.base_url, key, "get_ticker", {"symbol": "BTCUSDT"})
    assert not result.isError
    denied = run_in_thread(agent_call, stack.base_url, key, "place_order", {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002"})
    assert denied.isError and "trade" in denied.content[0].text  # created without the trade scope

    page.goto(stack.base_url + "/tokens/")
    assert key not in page.content()
    page.once("dialog", lambda d: d.accept())
    row = page.locator("#tokens tr", has_text="claude-code")
    row.locator("button", has_text="Revoke").click()
    page.wait_for_url("**/tokens/?revoked=1")
    assert agent_token_authenticate(key=key) is None


def test_reconnects_with_backoff_shows_state_and_refetches_what_it_missed(live, browser_page):
    stack, user, account, token = live
    page = browser_page
    login(page, stack.base_url)
    # Cut the live connection and keep it down: every reconnect attempt goes to a closed port.
    page.evaluate("""() => {
        window.__RealWebSocket = window.WebSocket;
        window.WebSocket = function () { return new window.__RealWebSocket("ws://127.0.0.1:9/"); };
        window.tmcpSocket.close();
    }""")
    page.wait_for_function("() => document.getElementById('conn-state').textContent.startsWith('offline')", timeout=10000)
    assert "retry in" in page.locator("#conn-state").text_content() or "reconnecting" in page.locator("#conn-state").text_content()
    page.screenshot(path=str(ARTIFACTS / "dashboard-offline.png"))

    result = run_in_thread(agent_call, stack.base_url, token, "place_order",
                           {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": "while-offline"})
    assert not result.isError
    page.wait_for_timeout(1000)
    row = page.locator(f'#account-{account.pk} table.orders tr[data-client-order-id="while-offline"]')
    assert row.count() == 0  # missed: the socket was down when it was pushed

    page.evaluate("() => { window.WebSocket = window.__RealWebSocket; }")
    page.wait_for_function("() => document.getElementById('conn-state').textContent === 'live'", timeout=40000)
    row.wait_for(timeout=15000)  # refetched after the reconnect
    assert "FILLED" in row.text_content()


def test_confirm_mode_order_waits_in_the_pending_panel_and_fills_when_approved(live, browser_page):
    """A token created in confirm mode on the tokens page; its agent's MCP order appears in the
    overview's "Pending approval" panel without a reload; the person approves it there; it is placed
    then, fills, and shows in the orders table."""
    import json

    from risk.models import OrderApproval
    from trading.models import Order

    stack, user, account, _ = live
    page = browser_page
    page.goto(stack.base_url + "/tokens/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "pw-for-tests-1")
    page.click("button[type=submit]")
    page.wait_for_url(stack.base_url + "/tokens/")
    page.fill("#token-form input[name=name]", "careful-agent")
    page.check("#token-form input[name=scopes][value=trade]")
    page.check("#token-form input[name=confirm_orders]")
    page.click("#token-form button[type=submit]")
    key = page.locator("#new-token").text_content().strip()
    assert "confirm mode" in page.locator("#tokens tr", has_text="careful-agent").text_content()
    assert "confirm mode" not in page.locator("#tokens tr", has_text="alice-agent").text_content()
    page.screenshot(path=str(ARTIFACTS / "tokens-confirm-mode.png"), full_page=True)

    page.goto(stack.base_url + "/")
    page.wait_for_function("() => window.tmcpSocketReady === true", timeout=15000)
    assert page.locator("#approvals").is_hidden()  # nothing waiting yet
    page.evaluate("window.__marker = 'no-reload'")

    result = run_in_thread(agent_call, stack.base_url, key, "place_order",
                           {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": "careful-1"})
    held = json.loads(result.content[0].text)
    assert not result.isError and held["status"] == "PENDING_APPROVAL", held
    assert not Order.objects.filter(account=account, client_order_id="careful-1").exists()
    row = page.locator('#approvals tr[data-client-order-id="careful-1"]')
    row.wait_for(timeout=15000)
    text = row.text_content()
    assert "BTCUSDT" in text and "BUY" in text and "careful-agent" in text and "0.002" in text
    assert page.locator("#approvals-count").text_content() == "1 waiting"
    page.screenshot(path=str(ARTIFACTS / "dashboard-pending-approval.png"), full_page=True)

    row.locator("button.approve").click()
    filled = page.locator(f'#account-{account.pk} table.orders tr[data-client-order-id="careful-1"]')
    filled.wait_for(timeout=15000)
    wait_until(lambda: "FILLED" in filled.text_content(), timeout=15, what="the approved order to show FILLED")
    assert "mcp" in filled.text_content()  # placed as the agent's order, on approval
    row.wait_for(state="detached", timeout=15000)
    page.locator("#approvals").wait_for(state="hidden", timeout=15000)
    assert page.evaluate("window.__marker") == "no-reload"
    approval = OrderApproval.objects.get(account=account, client_order_id="careful-1")
    assert approval.status == "APPROVED" and approval.decided_by == user and approval.order.status == "FILLED"
    page.locator('#activity li[data-action="order.approve"]').first.wait_for(timeout=15000)
    page.locator(f'#account-{account.pk} table.fills tbody tr[data-fill-id]').first.wait_for(timeout=15000)
    page.screenshot(path=str(ARTIFACTS / "dashboard-approved.png"), full_page=True)

    # A limit tightened while an order waits: the risk check at approval refuses it, and says why inline.
    result = run_in_thread(agent_call, stack.base_url, key, "place_order",
                           {"symbol": "BTCUSDT", "side": "BUY", "quantity": "0.002", "client_order_id": "careful-2"})
    assert json.loads(result.content[0].text)["status"] == "PENDING_APPROVAL"
    RiskLimit.objects.filter(account=account).update(max_order_notional=5)
    row = page.locator('#approvals tr[data-client-order-id="careful-2"]')
    row.wait_for(timeout=15000)
    row.locator("button.approve").click()
    note = row.locator(".approval-note")
    note.wait_for(timeout=15000)
    assert "Refused at approval" in note.text_content() and "max_order_notional" in note.text_content()
    assert row.locator("button.approve").count() == 0 and row.locator("button.dismiss").count() == 1
    rejected = page.locator(f'#account-{account.pk} table.orders tr[data-client-order-id="careful-2"]')
    rejected.wait_for(timeout=15000)
    assert "REJECTED" in rejected.text_content()
    page.wait_for_timeout(800)  # the state refetch after the events must keep the refusal on screen
    assert note.is_visible()
    page.locator("#approvals").screenshot(path=str(ARTIFACTS / "dashboard-approval-refused.png"))
    row.locator("button.dismiss").click()
    page.locator("#approvals").wait_for(state="hidden", timeout=5000)


def test_a_protection_lock_shows_in_the_risk_panel_without_reload(live, browser_page):
    """A losing trade trips a cooldown protection at the next BUY: the risk panel shows the lock
    (what, why, until when) as it happens."""
    from risk.models import Protection, ProtectionLock
    from core.errors import RiskRejected
    from trading.services import order_place

    stack, user, account, _ = live
    page = browser_page
    login(page, stack.base_url)
    assert page.locator(f"#account-{account.pk} .risk [data-lock-id]").count() == 0
    Protection.objects.create(account=account, kind="cooldown", scope="account", lock_minutes=30)
    order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY", quantity="0.004")
    order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="SELL", quantity="0.002")
    with pytest.raises(RiskRejected, match="locked until"):  # BUY at the ask, SELL at the bid: a losing trade
        order_place(account=account, actor_user=user, channel="api", symbol="BTCUSDT", side="BUY", quantity="0.002")
    lock = ProtectionLock.objects.get(account=account)
    shown = page.locator(f'#account-{account.pk} .risk [data-lock-id="{lock.pk}"]')
    shown.wait_for(timeout=15000)
    text = shown.text_content()
    assert "whole account" in text.lower() and "cooldown" in text.lower() and "losing trade on BTCUSDT" in text
    assert f"until {lock.until.strftime('%Y-%m-%d %H:%M:%S')} UTC" in text
    page.locator(f"#account-{account.pk} .risk").screenshot(path=str(ARTIFACTS / "dashboard-protection-lock.png"))
