"""The ledger in the admin (accounts, orders, fills, balances and positions are read-only here), the

Balances and positions change only through services (``trading.services``: a fill, or
``balance_adjust`` for a paper deposit/withdrawal, the "Deposit / withdraw (paper)" action on
accounts), each with its ``AuditEvent`` in the same transaction. The admin never adds, edits or
deletes a ledger row directly.
"""
from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse

from core.errors import InvalidInput, TradingError
from risk.audit import audit_record
from risk.models import Channel, ExchangeCredential, OrderApproval, Outcome, RiskLimit
from risk.services import account_set_state
from trading.approvals import order_approve, order_reject
from trading.credentials import ed25519_private_pem_check, exchange_credential_set
from trading.models import Account, Balance, Fill, Order, Position, Venue
from trading.services import account_halt, balance_adjust


class ReadOnlyAdminMixin:
    """No add, change or delete permission: the rows are shown (view permission) but only services
    write them."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class BalanceInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Balance
    extra = 0
    fields = ("asset", "free", "locked", "updated_at")
    readonly_fields = fields


class PositionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Position
    extra = 0
    fields = ("symbol", "quantity", "avg_entry_price", "realized_pnl", "updated_at")
    readonly_fields = fields


class BalanceAdjustForm(forms.Form):
    """The "Deposit / withdraw (paper)" action's form: a positive amount deposits, a negative one
    withdraws (in the asset)."""

    asset = forms.CharField(max_length=16, initial="USDT")
    amount = forms.DecimalField(max_digits=30, decimal_places=8,
                                help_text="In the asset: positive deposits, negative withdraws (e.g. -250).")
    reason = forms.CharField(max_length=500, widget=forms.TextInput(attrs={"size": 60}),
                             help_text="Kept in the audit log.")


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    """Accounts with their balances and positions (read-only); the venue and the quote asset are
    fixed once the account exists. Paper balances change with the "Deposit / withdraw (paper)"
    action (``trading.services.balance_adjust``, audited as ``balance.adjust``)."""

    list_display = ("id", "name", "owner", "venue", "quote_asset", "taker_fee_rate", "created_at")
    list_filter = ("venue",)
    search_fields = ("name", "owner__username")
    inlines = [BalanceInline, PositionInline]
    readonly_fields = ("last_trade_ids", "created_at")
    actions = ["deposit_withdraw"]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None:
            return (*self.readonly_fields, "owner", "venue", "quote_asset")
        return self.readonly_fields

    def has_delete_permission(self, request, obj=None):
        return False  # orders and fills PROTECT it; the ledger history stays

    @admin.action(description="Deposit / withdraw (paper)")
    def deposit_withdraw(self, request, queryset):
        """Ask for asset, amount and reason, then book the change on each selected paper account
        through ``balance_adjust`` (each refusal is shown and changes nothing)."""
        form = BalanceAdjustForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done = 0
            for account in queryset:
                try:
                    balance_adjust(account=account, asset=form.cleaned_data["asset"], amount=form.cleaned_data["amount"],
                                   actor=request.user, reason=form.cleaned_data["reason"], channel=Channel.ADMIN)
                    done += 1
                except TradingError as exc:
                    self.message_user(request, f"{account}: {exc.msg}", level=messages.ERROR)
            if done:
                self.message_user(request, f"Adjusted the {form.cleaned_data['asset'].upper()} balance of {done} account(s).")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Deposit / withdraw (paper)",
            "opts": self.model._meta,
            "form": form,
            "accounts": queryset,
            "non_paper": [a for a in queryset if a.venue != Venue.PAPER],
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/trading/account/balance_adjust.html", context)


@admin.register(Order)
class OrderAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "account", "client_order_id", "symbol", "side", "type", "quantity", "status", "executed_qty", "created_at")
    list_filter = ("status", "side", "type", "symbol", "channel")
    search_fields = ("client_order_id", "symbol")
    readonly_fields = [f.name for f in Order._meta.fields]


@admin.register(Fill)
class FillAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "account", "symbol", "side", "price", "qty", "commission", "commission_asset", "time")
    list_filter = ("symbol", "side")
    readonly_fields = [f.name for f in Fill._meta.fields]


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("account", "asset", "free", "locked", "updated_at")
    list_filter = ("asset",)
    readonly_fields = [f.name for f in Balance._meta.fields]


@admin.register(Position)
class PositionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("account", "symbol", "quantity", "avg_entry_price", "realized_pnl", "updated_at")
    readonly_fields = [f.name for f in Position._meta.fields]


# --- Risk limits and the kill switch, confirm-mode approvals, exchange key pairs ---------------------

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
        self._decide(request, queryset, order_approve, "approved")

    @admin.action(description="Reject the selected orders")
    def reject(self, request, queryset):
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
        saved = exchange_credential_set(account=obj.account if change else form.cleaned_data["account"], api_key=form.cleaned_data["api_key"],
                                        secret=form.cleaned_data.get("api_secret") or None, actor_user=request.user,
                                        channel=Channel.ADMIN, key_type=form.cleaned_data["key_type"],
                                        api_url=form.cleaned_data.get("api_url") or "",
                                        ws_api_url=form.cleaned_data.get("ws_api_url") or "")
        obj.pk = saved.pk  # the admin's change message and redirect name the saved row
