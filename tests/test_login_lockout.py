"""Brute-force protection on the password log-ins (issue 18, django-axes): after
``AXES_FAILURE_LIMIT`` wrong passwords for one username from one IP, that pair is locked out, the
right password included, and the lockout is audited; other addresses and other users are not
affected."""
import pytest
from django.conf import settings
from django.test import Client

from risk.models import AuditEvent


def attempt(client: Client, url: str, username: str, password: str):
    return client.post(url, {"username": username, "password": password, "next": "/"})


def logged_in(client: Client) -> bool:
    return settings.SESSION_COOKIE_NAME in client.cookies and client.get("/").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("url,channel", [("/login/", "dashboard"), ("/admin/login/", "admin")])
def test_twenty_wrong_passwords_then_the_right_one_is_refused(django_user_model, url, channel):
    user = django_user_model.objects.create_superuser("victim", "v@example.com", "right-password-1")
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    statuses = [attempt(attacker, url, "victim", f"guess-{i}").status_code for i in range(20)]
    assert statuses[0] == 200 and 429 in statuses  # the form again, then locked
    resp = attempt(attacker, url, "victim", "right-password-1")
    assert resp.status_code == 429 and b"Too many failed log-ins" in resp.content
    assert not logged_in(attacker)
    lockouts = AuditEvent.objects.filter(action="auth.lockout")
    assert lockouts.exists() and {e.channel for e in lockouts} == {channel}
    first = lockouts.order_by("created_at", "id").first()
    assert first.actor_user == user and first.outcome == "rejected"
    assert first.params["username"] == "victim" and first.params["ip_address"] == "203.0.113.7"
    # the lockout is per username + IP: the owner elsewhere still logs in
    owner = Client(REMOTE_ADDR="198.51.100.20")
    assert attempt(owner, url, "victim", "right-password-1").status_code == 302
    assert logged_in(owner)


@pytest.mark.django_db
def test_the_limit_counts_consecutive_failures_and_a_success_resets_it(django_user_model):
    django_user_model.objects.create_user("alice", password="right-password-1")
    django_user_model.objects.create_user("bob", password="right-password-2")
    client = Client(REMOTE_ADDR="203.0.113.8")
    limit = settings.AXES_FAILURE_LIMIT
    assert limit >= 2
    for i in range(limit - 1):
        assert attempt(client, "/login/", "alice", f"wrong-{i}").status_code == 200
    assert attempt(client, "/login/", "alice", "right-password-1").status_code == 302
    client.post("/logout/")
    for i in range(limit - 1):  # counted from zero again
        assert attempt(client, "/login/", "alice", f"wrong-again-{i}").status_code == 200
    assert attempt(client, "/login/", "alice", "right-password-1").status_code == 302
    client.post("/logout/")
    for i in range(limit):
        attempt(client, "/login/", "alice", f"wrong-{i}")
    assert attempt(client, "/login/", "alice", "right-password-1").status_code == 429
    # another user from the same address is not locked
    assert attempt(Client(REMOTE_ADDR="203.0.113.8"), "/login/", "bob", "right-password-2").status_code == 302
    assert not AuditEvent.objects.filter(action="auth.lockout", params__username="bob").exists()
