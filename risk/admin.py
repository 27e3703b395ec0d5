from django import forms
from django.contrib import admin, messages

from core.errors import TradingError
from risk.audit import audit_record
from risk.models import AccountGrant, AgentToken, AuditEvent, Channel, Outcome, Protection, ProtectionLock
from risk.protections import lock_release
from risk.services import account_grant_remove, account_grant_set


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
        for lock in queryset.select_related("account"):
            lock_release(lock=lock, actor_user=request.user, channel=Channel.ADMIN)
        self.message_user(request, f"Released {queryset.count()} lock(s).")


class AccountGrantForm(forms.ModelForm):
    """A grant on one of the signed-in admin's own accounts (the owner decides who may use it)."""

    class Meta:
        model = AccountGrant
        fields = ("account", "user", "role")

    def __init__(self, *args, request=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = request
        if "account" in self.fields:
            self.fields["account"].queryset = self.fields["account"].queryset.filter(owner=request.user).order_by("id")

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
