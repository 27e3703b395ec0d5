from django import forms
from django.contrib import admin, messages

from risk.audit import audit_record
from risk.models import (AccountGrant, AgentToken, AuditEvent, Channel, ExchangeCredential, OrderApproval, Outcome,
                         Protection, ProtectionLock, RiskLimit)
from risk.services import (account_grant_remove, account_grant_set, account_halt, account_set_state,
                           ed25519_private_pem_check)
from core.errors import InvalidInput, TradingError
from trading.models import Account


@admin.register(RiskLimit)
class RiskLimitAdmin(admin.ModelAdmin):
    """Limits per account; changes are audited with before/after values; the kill switch and
    resume are admin actions."""

    list_display = ("account", "trading_state", "max_order_notional", "max_position_notional", "max_total_exposure",
                    "max_open_orders", "max_orders_per_minute", "max_daily_loss", "halted_until", "updated_at")
    list_filter = ("trading_state",)
    readonly_fields = ("updated_at",)
    actions = ["kill_switch", "resume_trading"]

    def save_model(self, request, obj, form, change):
        before = {}
        if change:
            old = RiskLimit.objects.get(pk=obj.pk)
            before = {f: getattr(old, f) for f in form.changed_data}
        super().save_model(request, obj, form, change)
        audit_record(channel=Channel.ADMIN, action="risk_limit.change", outcome=Outcome.OK, actor_user=request.user,
                     account=obj.account, params={"fields": form.changed_data},
                     result={"before": before, "after": {f: getattr(obj, f) for f in form.changed_data}})

    @admin.action(description="Kill switch: halt and cancel open orders")
    def kill_switch(self, request, queryset):
        for limit in queryset.select_related("account"):
            account_halt(account=limit.account, actor_user=request.user, channel=Channel.ADMIN, reason="kill switch (admin)")
        self.message_user(request, f"Halted {queryset.count()} account(s) and canceled their open orders.")

    @admin.action(description="Resume trading (ACTIVE)")
    def resume_trading(self, request, queryset):
        for limit in queryset.select_related("account"):
            account_set_state(account=limit.account, actor_user=request.user, channel=Channel.ADMIN, state="ACTIVE")
        self.message_user(request, f"Resumed {queryset.count()} account(s).")


@admin.register(AgentToken)
class AgentTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "confirm_orders", "created_at", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("revoked_at", "confirm_orders")
    readonly_fields = ("prefix", "key_hash", "created_at", "last_used_at")
    search_fields = ("name", "user__username", "prefix")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit log is append-only."""

    list_display = ("created_at", "channel", "action", "outcome", "actor_user", "actor_token", "account", "latency_ms")
    list_filter = ("channel", "outcome", "action", "actor_user", "account", "created_at")
    search_fields = ("action", "message", "request_id", "actor_user__username", "actor_token__name")
    date_hierarchy = "created_at"
    actions = ["export_csv"]

    @admin.action(description="Export selected events as CSV")
    def export_csv(self, request, queryset):
        import csv
        import json

        from django.http import HttpResponse

        response = HttpResponse(content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="audit.csv"'
        writer = csv.writer(response)
        writer.writerow(["time", "channel", "action", "outcome", "user", "token", "account", "params", "message",
                         "risk_decision", "latency_ms", "request_id"])
        for e in queryset.select_related("actor_user", "actor_token", "account").order_by("created_at", "id"):
            writer.writerow([e.created_at.isoformat(), e.channel, e.action, e.outcome,
                             e.actor_user.get_username() if e.actor_user else "", e.actor_token.name if e.actor_token else "",
                             e.account_id or "", json.dumps(e.params), e.message,
                             json.dumps(e.risk_decision) if e.risk_decision else "", e.latency_ms or "", e.request_id])
        return response

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


def _before(obj, form, change) -> dict:
    """The changed fields' values before an admin edit."""
    before = {}
    if change:
        old = type(obj).objects.get(pk=obj.pk)
        before = {f: getattr(old, f) for f in form.changed_data}
    return before


@admin.register(Protection)
class ProtectionAdmin(admin.ModelAdmin):
    """Freqtrade-style protections per account (``risk.protections``); edits are audited with
    before/after values (``protection.change``)."""

    list_display = ("account", "kind", "scope", "enabled", "lookback_minutes", "lock_minutes", "trade_limit",
                    "max_drawdown_pct", "required_profit_pct", "updated_at")
    list_filter = ("kind", "scope", "enabled")
    list_select_related = ("account",)
    readonly_fields = ("created_at", "updated_at")

    def save_model(self, request, obj, form, change):
        before = _before(obj, form, change)
        super().save_model(request, obj, form, change)
        audit_record(channel=Channel.ADMIN, action="protection.change", outcome=Outcome.OK, actor_user=request.user,
                     account=obj.account, params={"protection_id": obj.pk, "kind": obj.kind, "fields": form.changed_data},
                     result={"before": before, "after": {f: getattr(obj, f) for f in form.changed_data}})

    def delete_model(self, request, obj):
        audit_record(channel=Channel.ADMIN, action="protection.delete", outcome=Outcome.OK, actor_user=request.user,
                     account=obj.account, params={"protection_id": obj.pk, "kind": obj.kind},
                     result={"before": {"kind": obj.kind, "scope": obj.scope, "enabled": obj.enabled}, "after": None})
        super().delete_model(request, obj)


@admin.register(ProtectionLock)
class ProtectionLockAdmin(admin.ModelAdmin):
    """Locks written by tripped protections (read-only; "release" ends one early, audited)."""

    list_display = ("account", "symbol", "protection", "locked_at", "until", "released_at", "reason")
    list_filter = ("protection__kind", "account")
    list_select_related = ("account", "protection")
    readonly_fields = ("account", "protection", "symbol", "reason", "locked_at", "until", "released_at")
    actions = ["release"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Release the selected locks now")
    def release(self, request, queryset):
        from risk.protections import lock_release

        for lock in queryset.select_related("account"):
            lock_release(lock=lock, actor_user=request.user, channel=Channel.ADMIN)
        self.message_user(request, f"Released {queryset.count()} lock(s).")


@admin.register(OrderApproval)
class OrderApprovalAdmin(admin.ModelAdmin):
    """Orders of confirm-mode tokens; approve (placed now, risk-checked now) or reject them."""

    list_display = ("created_at", "account", "side", "symbol", "client_order_id", "token", "status", "decided_by", "order")
    list_filter = ("status", "account")
    list_select_related = ("account", "token", "decided_by", "order")
    readonly_fields = [f.name for f in OrderApproval._meta.fields]
    actions = ["approve", "reject"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def _decide(self, request, queryset, decide, verb):
        from core.errors import TradingError

        done = 0
        for approval in queryset:
            try:
                decide(user=request.user, approval_id=approval.pk, channel=Channel.ADMIN, note=f"{verb} in admin")
                done += 1
            except TradingError as exc:
                self.message_user(request, f"Approval {approval.pk}: {exc}", level=messages.ERROR)
        self.message_user(request, f"{verb.capitalize()} {done} order(s).")

    @admin.action(description="Approve: place the selected orders now")
    def approve(self, request, queryset):
        from trading.approvals import order_approve

        self._decide(request, queryset, order_approve, "approved")

    @admin.action(description="Reject the selected orders")
    def reject(self, request, queryset):
        from trading.approvals import order_reject

        self._decide(request, queryset, order_reject, "rejected")


class ExchangeCredentialForm(forms.ModelForm):
    """The API secret is write-only: the form never renders it (nor its ciphertext)."""

    api_secret = forms.CharField(
        required=False, strip=True, widget=forms.Textarea(attrs={"rows": 4, "autocomplete": "off"}),
        help_text="Write-only: the HMAC secret key, or the Ed25519 private key PEM. Leave empty to keep the "
                  "stored one; it is encrypted (Fernet) and never shown.",
    )

    class Meta:
        model = ExchangeCredential
        fields = ("account", "api_key", "key_type", "api_url", "ws_api_url")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["key_type"].required = False  # blank keeps the stored type (HMAC for a new pair)

    def clean(self):
        data = super().clean()
        if not data.get("key_type"):
            data["key_type"] = self.instance.key_type or "HMAC_SHA256"
        changed_type = self.instance.pk and data["key_type"] != self.instance.key_type
        if (not self.instance.pk or changed_type) and not data.get("api_secret"):
            self.add_error("api_secret", "The API secret (or Ed25519 private key) is required for a new key pair or key type.")
        elif data.get("api_secret") and data.get("key_type") == "ED25519":
            try:
                ed25519_private_pem_check(data["api_secret"])
            except InvalidInput as exc:
                self.add_error("api_secret", str(exc))
        return data


@admin.register(ExchangeCredential)
class ExchangeCredentialAdmin(admin.ModelAdmin):
    """Per-account Binance key pairs, encrypted at rest; saving is audited without the secret."""

    form = ExchangeCredentialForm
    list_display = ("account", "api_key_prefix", "key_type", "api_url", "updated_at")
    list_select_related = ("account",)

    @admin.display(description="API key")
    def api_key_prefix(self, obj):
        return obj.api_key[:6] + "…"

    def get_readonly_fields(self, request, obj=None):
        return ("account",) if obj is not None else ()

    def save_model(self, request, obj, form, change):
        from risk.services import exchange_credential_set

        saved = exchange_credential_set(account=obj.account if change else form.cleaned_data["account"], api_key=form.cleaned_data["api_key"],
                                        secret=form.cleaned_data.get("api_secret") or None, actor_user=request.user,
                                        channel=Channel.ADMIN, key_type=form.cleaned_data["key_type"],
                                        api_url=form.cleaned_data.get("api_url") or "",
                                        ws_api_url=form.cleaned_data.get("ws_api_url") or "")
        obj.pk = saved.pk  # the admin's change message and redirect name the saved row


class AccountGrantForm(forms.ModelForm):
    """A grant on one of the signed-in admin's own accounts (the owner decides who may use it)."""

    class Meta:
        model = AccountGrant
        fields = ("account", "user", "role")

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request
        if "account" in self.fields:
            self.fields["account"].queryset = Account.objects.filter(owner=request.user).order_by("id")

    def clean(self):
        data = super().clean()
        if self.instance.pk:  # a role change: account and user are fixed
            account, user = self.instance.account, self.instance.user
        else:
            account, user = data.get("account"), data.get("user")
        if account is not None and user is not None and user.pk == account.owner_id:
            self.add_error("user", "The owner always has full access to their own account.")
        elif user is not None and not user.is_active:
            self.add_error("user", "This user is deactivated.")
        return data


@admin.register(AccountGrant)
class AccountGrantAdmin(admin.ModelAdmin):
    """Grants on the signed-in user's own accounts only: each add, role change and removal goes
    through ``risk.services.account_grant_set`` / ``account_grant_remove`` (owner only, audited as
    ``grant.set`` / ``grant.remove``)."""

    form = AccountGrantForm
    list_display = ("account", "user", "role", "created_at")
    list_filter = ("role",)
    list_select_related = ("account", "user")
    search_fields = ("user__username", "account__name")

    def get_queryset(self, request):
        return super().get_queryset(request).filter(account__owner=request.user)

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class WithRequest(form):
            def __init__(self, *args, **kw):
                super().__init__(*args, request=request, **kw)

        return WithRequest

    def get_readonly_fields(self, request, obj=None):
        return ("account", "user", "created_at") if obj is not None else ("created_at",)

    def save_model(self, request, obj, form, change):
        account = obj.account if change else form.cleaned_data["account"]
        user = obj.user if change else form.cleaned_data["user"]
        saved = account_grant_set(account=account, actor=request.user, username=user.get_username(),
                                  role=form.cleaned_data["role"], channel=Channel.ADMIN)
        obj.pk = saved.pk  # the admin links to the saved row

    def delete_model(self, request, obj):
        account_grant_remove(account=obj.account, actor=request.user, username=obj.user.get_username(), channel=Channel.ADMIN)

    def delete_queryset(self, request, queryset):
        for grant in queryset.select_related("account", "user"):
            try:
                self.delete_model(request, grant)
            except TradingError as exc:
                self.message_user(request, f"{grant}: {exc.msg}", level=messages.ERROR)
