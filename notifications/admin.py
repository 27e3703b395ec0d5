from django.contrib import admin

from notifications.models import NotificationChannel


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    """Channels are listed with their masked URL only; the encrypted URL is never shown."""

    list_display = ("id", "user", "url_hint", "events", "enabled", "created_at")
    list_filter = ("enabled",)
    fields = ("user", "url_hint", "events", "enabled")
    readonly_fields = ("user", "url_hint")

    def has_add_permission(self, request):
        return False
