from django.contrib import admin

from marketdata.models import IndicatorSnapshot, Kline, StreamSubscription, Symbol, TradeFee


@admin.register(Symbol)
class SymbolAdmin(admin.ModelAdmin):
    list_display = ("symbol", "status", "base_asset", "quote_asset", "tick_size", "step_size", "min_notional", "updated_at")
    list_filter = ("status", "quote_asset")
    search_fields = ("symbol", "base_asset", "quote_asset")


@admin.register(Kline)
class KlineAdmin(admin.ModelAdmin):
    list_display = ("symbol", "interval", "open_time", "open", "high", "low", "close", "volume")
    list_filter = ("symbol", "interval")


@admin.register(IndicatorSnapshot)
class IndicatorSnapshotAdmin(admin.ModelAdmin):
    list_display = ("symbol", "interval", "open_time", "close", "created_at")
    list_filter = ("symbol", "interval")
    readonly_fields = ("symbol", "interval", "open_time", "close", "values", "signals", "created_at")


@admin.register(TradeFee)
class TradeFeeAdmin(admin.ModelAdmin):
    list_display = ("symbol", "maker_rate", "taker_rate", "updated_at")
    search_fields = ("symbol",)


@admin.register(StreamSubscription)
class StreamSubscriptionAdmin(admin.ModelAdmin):
    list_display = ("user", "stream", "created_at")
    search_fields = ("stream", "user__username")
