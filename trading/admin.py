from django.contrib import admin

from trading.models import Account, Balance, Fill, Order, Position


class BalanceInline(admin.TabularInline):
    model = Balance
    extra = 0


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "venue", "quote_asset", "taker_fee_rate", "created_at")
    list_filter = ("venue",)
    search_fields = ("name", "owner__username")
    inlines = [BalanceInline]


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("id", "account", "client_order_id", "symbol", "side", "type", "quantity", "status", "executed_qty", "created_at")
    list_filter = ("status", "side", "type", "symbol", "channel")
    search_fields = ("client_order_id", "symbol")
    readonly_fields = [f.name for f in Order._meta.fields]


@admin.register(Fill)
class FillAdmin(admin.ModelAdmin):
    list_display = ("id", "account", "symbol", "side", "price", "qty", "commission", "commission_asset", "time")
    list_filter = ("symbol", "side")
    readonly_fields = [f.name for f in Fill._meta.fields]


@admin.register(Position)
class PositionAdmin(admin.ModelAdmin):
    list_display = ("account", "symbol", "quantity", "avg_entry_price", "realized_pnl", "updated_at")
