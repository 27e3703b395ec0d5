"""Account grants (issue 18): only the account's owner adds, changes and removes who else may use
it (viewer / trader), through ``risk.services`` from the dashboard's sharing page and the admin;
every change is audited; a grantee or a stranger changes nothing."""
import pytest
from django.test import Client

from risk.models import AccountGrant, AuditEvent
from risk.services import account_grant_remove, account_grant_set, account_grants_list
from trading import selectors
from core.errors import InvalidInput, NotFound, PermissionDenied
from trading.services import account_create


@pytest.fixture
def people(trader, make_user):
    alice, account, _ = trader
    return alice, account, make_user("bob"), make_user("carol")


def visible(user, account, need="read") -> bool:
    return selectors.accounts_for_user(user, need=need).filter(pk=account.pk).exists()


@pytest.mark.django_db
def test_owner_grants_changes_and_removes_and_each_step_is_audited(people):
    alice, account, bob, _ = people
    assert not visible(bob, account)
    account_grant_set(account=account, actor=alice, username="bob", role="viewer", channel="dashboard")
    assert visible(bob, account) and not visible(bob, account, need="trade")
    account_grant_set(account=account, actor=alice, username="bob", role="trader", channel="dashboard")
    assert visible(bob, account, need="trade")
    assert [(g["username"], g["role"]) for g in account_grants_list(account=account, actor=alice)] == [("bob", "trader")]
    account_grant_remove(account=account, actor=alice, username="bob", channel="dashboard")
    assert not visible(bob, account)
    events = list(AuditEvent.objects.filter(action__startswith="grant.").order_by("created_at", "id"))
    assert [(e.action, e.result["before"], e.result["after"]) for e in events] == [
        ("grant.set", None, "viewer"), ("grant.set", "viewer", "trader"), ("grant.remove", "trader", None)]
    assert all(e.actor_user == alice and e.account_id == account.pk for e in events)


@pytest.mark.django_db
def test_a_grantee_or_a_stranger_changes_nothing(people):
    alice, account, bob, carol = people
    account_grant_set(account=account, actor=alice, username="bob", role="trader", channel="dashboard")
    with pytest.raises(PermissionDenied):
        account_grant_set(account=account, actor=bob, username="carol", role="viewer", channel="dashboard")
    with pytest.raises(PermissionDenied):
        account_grant_remove(account=account, actor=bob, username="bob", channel="dashboard")
    with pytest.raises(PermissionDenied):
        account_grants_list(account=account, actor=bob)
    with pytest.raises(NotFound, match="not found among your accounts"):
        account_grant_set(account=account, actor=carol, username="carol", role="trader", channel="dashboard")
    with pytest.raises(NotFound):
        account_grant_remove(account=account, actor=carol, username="bob", channel="dashboard")
    assert list(AccountGrant.objects.values_list("user__username", "role")) == [("bob", "trader")]
    assert AuditEvent.objects.filter(action__startswith="grant.").count() == 1


@pytest.mark.django_db
def test_bad_grant_requests_are_refused(people, django_user_model):
    alice, account, bob, _ = people
    for kwargs, error in [({"username": "bob", "role": "admin"}, InvalidInput), ({"username": "nobody", "role": "viewer"}, NotFound),
                          ({"username": "alice", "role": "viewer"}, InvalidInput), ({"username": "", "role": "viewer"}, NotFound)]:
        with pytest.raises(error):
            account_grant_set(account=account, actor=alice, channel="dashboard", **kwargs)
    bob.is_active = False
    bob.save()
    with pytest.raises(NotFound):
        account_grant_set(account=account, actor=alice, username="bob", role="viewer", channel="dashboard")
    with pytest.raises(NotFound):
        account_grant_remove(account=account, actor=alice, username="bob", channel="dashboard")
    assert not AccountGrant.objects.exists()


@pytest.mark.django_db
def test_dashboard_sharing_page_is_the_owners_only(people):
    alice, account, bob, carol = people
    owner = Client()
    owner.force_login(alice)
    url = f"/accounts/{account.pk}/sharing/"
    assert owner.get(url).status_code == 200
    resp = owner.post(url, {"action": "set", "username": "bob", "role": "viewer"})
    assert resp.status_code == 302 and AccountGrant.objects.get(account=account, user=bob).role == "viewer"
    page = owner.get(url).content.decode()
    assert 'data-username="bob"' in page
    bad = owner.post(url, {"action": "set", "username": "nobody", "role": "viewer"})
    assert bad.status_code == 404 and "No active user" in bad.content.decode()
    state = owner.get("/dashboard/state/").json()
    assert [a["isOwner"] for a in state["accounts"]] == [True]

    grantee = Client()
    grantee.force_login(bob)
    assert grantee.get(url).status_code == 403
    assert grantee.post(url, {"action": "set", "username": "carol", "role": "trader"}).status_code == 403
    assert grantee.post(url, {"action": "remove", "username": "bob"}).status_code == 403
    assert [a["isOwner"] for a in grantee.get("/dashboard/state/").json()["accounts"]] == [False]
    stranger = Client()
    stranger.force_login(carol)
    assert stranger.get(url).status_code == 404
    assert stranger.post(url, {"action": "set", "username": "carol", "role": "trader"}).status_code == 404
    assert list(AccountGrant.objects.values_list("user__username", "role")) == [("bob", "viewer")]

    assert owner.post(url, {"action": "remove", "username": "bob"}).status_code == 302
    assert not AccountGrant.objects.exists()
    assert AuditEvent.objects.filter(action__startswith="grant.", channel="dashboard").count() == 2


@pytest.mark.django_db
def test_admin_manages_grants_of_the_signed_in_owners_accounts_only(people, django_user_model):
    alice, account, bob, carol = people
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    own = account_create(owner=root, name="Root's")
    admin = Client()
    admin.force_login(root)
    # root may add grants on its own account, through the service (audited)
    resp = admin.post("/admin/risk/accountgrant/add/", {"account": own.pk, "user": bob.pk, "role": "viewer"})
    assert resp.status_code == 302, resp.content[:1500]
    grant = AccountGrant.objects.get(account=own, user=bob)
    assert AuditEvent.objects.filter(action="grant.set", channel="admin", account=own, actor_user=root).exists()
    resp = admin.post(f"/admin/risk/accountgrant/{grant.pk}/change/", {"role": "trader"})
    assert resp.status_code == 302 and AccountGrant.objects.get(pk=grant.pk).role == "trader"
    # ... but not on alice's, even as a superuser
    resp = admin.post("/admin/risk/accountgrant/add/", {"account": account.pk, "user": carol.pk, "role": "trader"})
    assert resp.status_code == 200 and not AccountGrant.objects.filter(account=account).exists()
    account_grant_set(account=account, actor=alice, username="carol", role="viewer", channel="dashboard")
    alices = AccountGrant.objects.get(account=account)
    listing = admin.get("/admin/risk/accountgrant/").content.decode()
    assert f"/admin/risk/accountgrant/{grant.pk}/change/" in listing
    assert f"/admin/risk/accountgrant/{alices.pk}/change/" not in listing
    admin.post(f"/admin/risk/accountgrant/{alices.pk}/change/", {"role": "trader"})
    admin.post(f"/admin/risk/accountgrant/{alices.pk}/delete/", {"post": "yes"})
    assert AccountGrant.objects.get(pk=alices.pk).role == "viewer"
    # removal through the admin is audited too
    assert admin.post(f"/admin/risk/accountgrant/{grant.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not AccountGrant.objects.filter(pk=grant.pk).exists()
    assert AuditEvent.objects.filter(action="grant.remove", channel="admin", account=own).exists()
