"""The ledger in the admin: accounts, orders, fills, balances and positions are read-only here.

Balances and positions change only through services (``trading.services``: a fill, or
``balance_adjust`` for a paper deposit/withdrawal, the "Deposit / withdraw (paper)" action on
accounts), each with its ``AuditEvent`` in the same transaction. The admin never adds, edits or
deletes a ledger row directly.
"""
from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse

from risk.models import Channel
from core.errors import TradingError
from trading.models import Account, Balance, Fill, Order, Position, Venue
from trading.services import balance_adjust


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
