"""The ledger cannot be rewritten in the admin (issue 18, finding 3): orders, fills, balances and
positions are read-only there, paper balances change only through ``balance_adjust`` (the
"Deposit / withdraw (paper)" action), which writes its audit event in the same transaction."""
from decimal import Decimal

import pytest
from django.db import transaction

from risk.models import AuditEvent
from core.errors import InvalidInput, PermissionDenied
from trading.models import Account, Balance, Position
from trading.services import account_create, balance_adjust


@pytest.fixture
def root(django_user_model, client):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client.force_login(user)
    return user


def _inline_management(prefix: str, total: int) -> dict:
    return {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": "0", f"{prefix}-MIN_NUM_FORMS": "0",
            f"{prefix}-MAX_NUM_FORMS": "1000"}


@pytest.mark.django_db
def test_add_pages_of_ledger_models_are_refused_not_500(root, client):
    for model in ("order", "fill", "balance", "position"):
        assert client.get(f"/admin/trading/{model}/").status_code == 200
        resp = client.get(f"/admin/trading/{model}/add/")
        assert resp.status_code == 403, (model, resp.status_code)
        assert client.post(f"/admin/trading/{model}/add/", {}).status_code == 403


@pytest.mark.django_db
def test_account_form_cannot_change_balances_or_add_positions(trader, root, client):
    user, account, _ = trader
    balance = Balance.objects.get(account=account, asset="USDT")
    page = client.get(f"/admin/trading/account/{account.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="balances-0-free"' not in html and "10000" in html  # shown, not editable
    form = {"name": account.name, "maker_fee_rate": "0.001", "taker_fee_rate": "0.001", "api_key": "",
            # the attack: edit the balance row and add a position through the inlines
            "balances-0-id": balance.pk, "balances-0-account": account.pk, "balances-0-asset": "USDT",
            "balances-0-free": "1000000", "balances-0-locked": "0",
            **_inline_management("balances", 1),
            "positions-0-symbol": "ETHUSDT", "positions-0-quantity": "5", "positions-0-avg_entry_price": "100",
            "positions-0-realized_pnl": "0", **_inline_management("positions", 1)}
    client.post(f"/admin/trading/account/{account.pk}/change/", form)
    assert Balance.objects.get(pk=balance.pk).free == Decimal("10000")
    assert not Position.objects.filter(account=account).exists()
    assert client.post(f"/admin/trading/balance/{balance.pk}/change/", {"free": "1000000"}).status_code == 403
    assert client.post(f"/admin/trading/account/{account.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Balance.objects.get(pk=balance.pk).free == Decimal("10000")
    assert Account.objects.filter(pk=account.pk, venue="paper").exists()


@pytest.mark.django_db
def test_deposit_withdraw_action_books_through_the_service_with_an_audit_event(trader, root, client):
    user, account, _ = trader
    url = "/admin/trading/account/"
    form = client.post(url, {"action": "deposit_withdraw", "_selected_action": [account.pk]})
    assert form.status_code == 200 and b'name="amount"' in form.content
    resp = client.post(url, {"action": "deposit_withdraw", "_selected_action": [account.pk], "apply": "1",
                             "asset": "usdt", "amount": "250.5", "reason": "top-up for a test"})
    assert resp.status_code == 302
    assert Balance.objects.get(account=account, asset="USDT").free == Decimal("10250.5")
    event = AuditEvent.objects.get(action="balance.adjust", outcome="ok")
    assert event.channel == "admin" and event.actor_user == root and event.account_id == account.pk
    assert event.result["before"]["free"].startswith("10000") and event.result["after"]["free"].startswith("10250.5")
    # a withdrawal beyond the free balance is refused and changes nothing
    client.post(url, {"action": "deposit_withdraw", "_selected_action": [account.pk], "apply": "1",
                      "asset": "USDT", "amount": "-20000", "reason": "too much"})
    assert Balance.objects.get(account=account, asset="USDT").free == Decimal("10250.5")
    assert AuditEvent.objects.filter(action="balance.adjust", outcome="rejected").count() == 1


@pytest.mark.django_db
def test_balance_adjust_rules(trader, django_user_model):
    user, account, _ = trader
    out = balance_adjust(account=account, asset="BTC", amount=Decimal("0.5"), actor=user, reason="seed BTC")
    assert out["after"]["free"] == "0.50000000" and out["before"]["free"] == "0.00000000"
    balance_adjust(account=account, asset="BTC", amount="-0.5", actor=user, reason="back to zero")
    assert Balance.objects.get(account=account, asset="BTC").free == 0
    for bad in (True, 1.5, "NaN", "1e400", "0", "abc", "0.000000001", None):
        with pytest.raises(InvalidInput):
            balance_adjust(account=account, asset="USDT", amount=bad, actor=user, reason="bad")
    with pytest.raises(InvalidInput, match="only 0"):
        balance_adjust(account=account, asset="ETH", amount="-1", actor=user, reason="negative")
    with pytest.raises(InvalidInput, match="reason"):
        balance_adjust(account=account, asset="USDT", amount="1", actor=user, reason=" ")
    with pytest.raises(InvalidInput, match="asset"):
        balance_adjust(account=account, asset="US DT", amount="1", actor=user, reason="bad asset")
    live = account_create(owner=user, name="Live", venue="testnet")
    with pytest.raises(PermissionDenied):
        balance_adjust(account=live, asset="USDT", amount="100", actor=user, reason="not paper")
    assert not Balance.objects.filter(account=live).exists()
    assert Balance.objects.get(account=account, asset="USDT").free == Decimal("10000")


@pytest.mark.django_db(transaction=True)
def test_balance_change_and_its_audit_event_commit_together(trader):
    """The audit event is in the balance change's transaction: rolling back the caller's
    transaction undoes both."""
    user, account, _ = trader
    with pytest.raises(RuntimeError), transaction.atomic():
        balance_adjust(account=account, asset="USDT", amount="5", actor=user, reason="rolled back")
        assert AuditEvent.objects.filter(action="balance.adjust").count() == 1
        raise RuntimeError("roll back")
    assert Balance.objects.get(account=account, asset="USDT").free == Decimal("10000")
    assert not AuditEvent.objects.filter(action="balance.adjust").exists()
