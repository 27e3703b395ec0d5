"""OAuth entry points: the consent page (django-oauth-toolkit's authorization view in our
dashboard's look), rate-limited and audited registration, token and revocation endpoints, the
RFC 8414 / RFC 9728 metadata documents, the rate-limited sign-in page and the grant revoke button.

Each view parses the request and calls ``oauth.services`` / ``oauth.selectors``; the protocol
itself is django-oauth-toolkit's (oauthlib's)."""
from __future__ import annotations

import json
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views.decorators.clickjacking import xframe_options_deny
from csp.constants import SELF
from csp.decorators import csp_replace
from django_ratelimit.core import is_ratelimited
from oauth2_provider import views as dot_views
from oauth2_provider.exceptions import OAuthToolkitError
from oauth2_provider.models import get_application_model
from oauthlib.oauth2.rfc6749.errors import CustomOAuth2Error

from core.errors import TradingError
from core.views import post_action
from oauth import selectors, services
from oauth.clients import registration_metadata_problem
from oauth.forms import ConsentForm
from risk.audit import audit_record
from risk.models import Channel, Outcome
from trading.selectors import accounts_for_user

RETRY_AFTER_S = 60


def rate_limited(request, group: str) -> bool:
    """Count this request against ``settings.OAUTH_RATE_LIMIT`` per client IP for ``group``
    (django-ratelimit, counted in Redis); True when over the limit."""
    return is_ratelimited(request, group=f"oauth.{group}", key="ip", rate=settings.OAUTH_RATE_LIMIT, increment=True)


def too_many_requests(request, group: str) -> HttpResponse:
    """HTTP 429 with ``Retry-After`` (audited as ``oauth.rate_limited``)."""
    audit_record(channel=Channel.API, action="oauth.rate_limited", outcome=Outcome.REJECTED,
                 actor_user=request.user if request.user.is_authenticated else None,
                 params={"endpoint": group, "ip": request.META.get("REMOTE_ADDR", "")})
    response = JsonResponse({"error": "too_many_requests",
                             "error_description": f"Too many requests; retry in {RETRY_AFTER_S} s."}, status=429)
    response["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _resource_error(credentials: dict) -> OAuthToolkitError:
    return OAuthToolkitError(
        error=CustomOAuth2Error(error="invalid_target", state=credentials.get("state"),
                                description=f"The resource parameter is required and must be {settings.MCP_RESOURCE_URL} (RFC 8707)."),
        redirect_uri=credentials.get("redirect_uri"),
    )


class ConsentRequired(Exception):
    """Raised where django-oauth-toolkit would approve without asking (``approval_prompt=auto``
    with an earlier token, or an application marked ``skip_authorization``): every grant here
    needs the person's choices, so the consent page is shown instead."""


# The consent form posts to us and we answer with a redirect to the client's registered
# redirect_uri; Chromium applies the page's CSP form-action to that redirect too, so this page
# admits https targets and loopback callbacks (RFC 8252 §7.3) besides our own origin.
CONSENT_FORM_ACTION = {"form-action": [SELF, "https:", "http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]}


@method_decorator(xframe_options_deny, name="dispatch")
@method_decorator(csp_replace(CONSENT_FORM_ACTION), name="dispatch")
class ConsentView(dot_views.AuthorizationView):
    """GET ``/oauth/authorize/``: after sign-in, the consent page (client name, redirect host,
    requested scopes; the person picks scopes, accounts, symbols, confirm mode and expiry).
    POST: deny (``access_denied``) or allow: ``services.oauth_grant_create`` records the consent and
    django-oauth-toolkit issues the code bound to it. The ``resource`` (RFC 8707) must be our MCP
    resource, else ``invalid_target``. CSRF-protected (Django's middleware), framing denied,
    rate-limited per IP."""

    template_name = "oauth/consent.html"
    form_class = ConsentForm

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated and rate_limited(request, "consent"):
            return too_many_requests(request, "consent")
        return super().dispatch(request, *args, **kwargs)

    def get(self, request, *args, **kwargs):
        resource_ok = selectors.resource_matches(request.GET.getlist("resource"))
        pkce_ok = request.GET.get("code_challenge_method") == "S256" and request.GET.get("code_challenge")
        if not (resource_ok and pkce_ok):
            try:
                _scopes, credentials = self.validate_authorization_request(request)
            except OAuthToolkitError as error:
                return self.error_response(error, application=None)
            application = get_application_model().objects.get(client_id=credentials["client_id"])
            error = _resource_error(credentials) if not resource_ok else OAuthToolkitError(
                error=CustomOAuth2Error(error="invalid_request", state=credentials.get("state"),
                                        description="PKCE is required: send code_challenge with code_challenge_method=S256."),
                redirect_uri=credentials.get("redirect_uri"))
            return self.error_response(error, application)
        try:
            return super().get(request, *args, **kwargs)
        except ConsentRequired:  # an "auto" approval or a skip-authorization client: the person decides anyway
            return self.render_to_response(self.get_context_data(**self.oauth2_data))

    def get_form_kwargs(self):
        kwargs = super().get_form_kwargs()
        kwargs["accounts"] = list(accounts_for_user(self.request.user).order_by("id"))
        return kwargs

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        application = context.get("application")
        if application is None:
            client_id = self.request.POST.get("client_id") or self.request.GET.get("client_id")
            application = get_application_model().objects.filter(client_id=client_id).first()
        redirect_uri = context.get("redirect_uri") or self.request.POST.get("redirect_uri", "")
        requested = (context.get("scopes") or (self.request.POST.get("scope", "").split()))
        descriptions = settings.OAUTH2_PROVIDER["SCOPES"]
        context.update({
            "page": "tokens", "client": application,
            "client_label": (application.name or application.client_id) if application else "an unknown client",
            "redirect_host": urlsplit(redirect_uri).netloc or redirect_uri,
            "requested_scopes": [(s, descriptions.get(s, s)) for s in requested],
            "resource": settings.MCP_RESOURCE_URL,
        })
        return context

    def form_valid(self, form):
        if not get_application_model().objects.filter(client_id=form.cleaned_data["client_id"]).exists():
            form.add_error(None, "Unknown client: start the sign-in again from your MCP client.")
            return self.form_invalid(form)
        self.consent_form = form
        try:
            return super().form_valid(form)
        except TradingError as exc:
            form.add_error(None, exc.msg)
            return self.form_invalid(form)

    def create_authorization_response(self, request, scopes, credentials, allow):
        """On allow, record the consent and pass its id to the validator with the credentials
        (oauthlib sets them on its request), in one transaction with the code."""
        if allow and getattr(self, "consent_form", None) is None:
            raise ConsentRequired
        if not allow:
            audit_record(channel=Channel.DASHBOARD, action="oauth.consent", outcome=Outcome.REJECTED, actor_user=request.user,
                         message="The person denied the client access.",
                         params={"client_id": str(credentials.get("client_id", ""))[:255],
                                 "redirect_host": urlsplit(credentials.get("redirect_uri") or "").netloc})
            return super().create_authorization_response(request, scopes, credentials, allow)
        form = self.consent_form
        if not selectors.resource_matches(credentials.get("resource")):
            raise _resource_error(credentials)
        application = get_application_model().objects.get(client_id=credentials["client_id"])
        with transaction.atomic():
            grant = services.oauth_grant_create(
                user=request.user, application=application, scopes=scopes.split(),
                resource=credentials["resource"][0], redirect_uri=credentials.get("redirect_uri") or "",
                account_ids=form.cleaned_data.get("accounts") or [], symbols=form.cleaned_data["symbol_list"],
                confirm_orders=bool(form.cleaned_data.get("confirm_orders")),
                expires_days=form.cleaned_data.get("expires_days"),
            )
            return super().create_authorization_response(
                request, scopes, {**credentials, "tradingmcp_grant_id": grant.pk}, allow)


def _audit_endpoint(request, action: str, response, *, params: dict, actor_token=None) -> None:
    try:
        body = json.loads(response.content or b"{}")
    except ValueError:
        body = {}
    ok = 200 <= response.status_code < 300
    audit_record(channel=Channel.API, action=action, outcome=Outcome.OK if ok else Outcome.REJECTED,
                 actor_user=getattr(actor_token, "user", None), actor_token=actor_token,
                 params={**params, "ip": request.META.get("REMOTE_ADDR", "")},
                 message="" if ok else str(body.get("error_description") or body.get("error") or "")[:500],
                 result={"status": response.status_code, "error": body.get("error")} if not ok else {"status": response.status_code})


def _client_id(request) -> str:
    return str(request.POST.get("client_id", ""))[:255]


class TokenView(dot_views.TokenView):
    """POST ``/oauth/token/`` (RFC 6749 §3.2): code exchange with PKCE and refresh with rotation,
    django-oauth-toolkit's; rate-limited per IP and audited as ``oauth.token``."""

    def post(self, request, *args, **kwargs):
        if rate_limited(request, "token"):
            return too_many_requests(request, "token")
        response = super().post(request, *args, **kwargs)
        actor = None
        if response.status_code == 200:
            actor = selectors.resolve_oauth_access_token(json.loads(response.content).get("access_token", ""))
        _audit_endpoint(request, "oauth.token", response, actor_token=actor,
                        params={"grant_type": str(request.POST.get("grant_type", ""))[:64], "client_id": _client_id(request)})
        return response


class RevokeTokenView(dot_views.RevokeTokenView):
    """POST ``/oauth/revoke_token/`` (RFC 7009), django-oauth-toolkit's; rate-limited and audited
    as ``oauth.revoke_token``."""

    def post(self, request, *args, **kwargs):
        if rate_limited(request, "revoke"):
            return too_many_requests(request, "revoke")
        response = super().post(request, *args, **kwargs)
        _audit_endpoint(request, "oauth.revoke_token", response, params={"client_id": _client_id(request)})
        return response


class IntrospectView(dot_views.IntrospectTokenView):
    """POST ``/oauth/introspect/`` (RFC 7662), django-oauth-toolkit's, for a confidential client
    created in the admin (client credentials) or a token with the ``introspection`` scope. A token
    is active only if it still works at ``/mcp`` (``selectors.resolve_oauth_access_token``: its
    grant, permission record and user are active and it is bound to our resource)."""

    @staticmethod
    def get_token_response(token_value=None):
        response = dot_views.IntrospectTokenView.get_token_response(token_value)
        if response.status_code == 200 and json.loads(response.content).get("active"):
            if selectors.resolve_oauth_access_token(token_value) is None:
                return JsonResponse({"active": False})
        return response


def registration_error(description: str) -> JsonResponse:
    return JsonResponse({"error": "invalid_client_metadata", "error_description": description}, status=400)


def _metadata(request):
    try:
        return json.loads(request.body or b"{}")
    except ValueError:
        return None


class RegistrationView(dot_views.DynamicClientRegistrationView):
    """POST ``/oauth/register/`` (RFC 7591), open to any client (MCP clients register themselves),
    checked by ``registration_metadata_problem``; django-oauth-toolkit creates the ``Application``
    (visible and deletable in the admin). Rate-limited per IP, audited as ``oauth.register``."""

    def post(self, request, *args, **kwargs):
        if rate_limited(request, "register"):
            return too_many_requests(request, "register")
        metadata = _metadata(request)
        problem = registration_metadata_problem(metadata)
        response = registration_error(problem) if problem else super().post(request, *args, **kwargs)
        try:
            client_id = json.loads(response.content).get("client_id", "")
        except ValueError:
            client_id = ""
        meta = metadata if isinstance(metadata, dict) else {}
        uris = meta.get("redirect_uris") if isinstance(meta.get("redirect_uris"), list) else []
        _audit_endpoint(request, "oauth.register", response, params={
            "client_id": client_id, "client_name": str(meta.get("client_name", ""))[:255],
            "redirect_hosts": sorted({urlsplit(u).netloc for u in uris if isinstance(u, str)}),
        })
        return response


class RegistrationManagementView(dot_views.DynamicClientRegistrationManagementView):
    """RFC 7592 ``/oauth/register/<client_id>/`` (with the registration access token): an update
    passes the same checks as a registration."""

    def put(self, request, client_id: str, *args, **kwargs):
        if rate_limited(request, "register"):
            return too_many_requests(request, "register")
        problem = registration_metadata_problem(_metadata(request))
        if problem:
            return registration_error(problem)
        return super().put(request, client_id, *args, **kwargs)


class LoginView(auth_views.LoginView):
    """The sign-in page, rate-limited per IP on POST (sign-ins are audited by ``oauth.signals``)."""

    template_name = "registration/login.html"

    def post(self, request, *args, **kwargs):
        if rate_limited(request, "login"):
            return too_many_requests(request, "login")
        return super().post(request, *args, **kwargs)


@post_action(done="tokens", query="grant_revoked=1",
             refused=lambda request, exc: JsonResponse({"error": exc.msg}, status=404))
def grant_revoke_view(request, grant_id: int):
    """Revoke one of your OAuth grants (404 for anyone else's), back to the tokens page."""
    services.oauth_grant_revoke(user=request.user, grant_id=grant_id)
