"""Content-Security-Policy (issue 18, django-csp): every page carries a policy that lets it run and
style with the site's own static files only, and no page of ours needs more (no inline script,
event-handler attribute or style attribute). tests/test_dashboard_browser.py checks in Chromium
that nothing is refused while the dashboard works."""
import re

import pytest
from django.test import Client

PAGES = ["/", "/market/BTCUSDT/", "/tokens/", "/admin/", "/admin/trading/account/", "/admin/risk/auditevent/"]


def policy(resp) -> dict[str, list[str]]:
    header = resp.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in (p.strip() for p in header.split(";")) if part}


def test_login_page_policy_allows_own_origin_only(db):
    resp = Client().get("/login/")
    csp = policy(resp)
    assert csp["default-src"] == ["'self'"] and csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert "'unsafe-inline'" not in resp.headers["Content-Security-Policy"]
    assert "'unsafe-eval'" not in resp.headers["Content-Security-Policy"]


@pytest.mark.django_db
def test_every_page_has_the_policy_and_no_inline_code(symbols, django_user_model, trader):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = Client()
    client.force_login(root)
    from risk.services import agent_token_create

    agent_token_create(user=root, name="it's <b>x</b>")  # the revoke form's confirmation text comes from data
    for url in PAGES + ["/login/"]:
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"], url
        html = resp.content.decode()
        for tag in re.findall(r"<script\b[^>]*>", html):
            assert "src=" in tag or 'type="application/json"' in tag, (url, tag)
        assert not re.search(r"\son[a-z]+\s*=", html), (url, re.search(r".{60}\son[a-z]+\s*=.{60}", html))
        assert not re.search(r"\sstyle\s*=", html) and "<style" not in html, url
