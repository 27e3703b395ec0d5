"""Admin: registered OAuth clients (django-oauth-toolkit's admin, made removable with their
grants and tokens) and the OAuth grants (consents) with their permission records."""
from django.contrib import admin
from oauth2_provider.admin import ApplicationAdmin

from oauth import services
from oauth.models import OAuthGrant


class ClientAdmin(ApplicationAdmin):
    """django-oauth-toolkit's ``ApplicationAdmin`` (set as ``APPLICATION_ADMIN_CLASS``); deleting a
    client revokes its grants (permission records included) and deletes its tokens first
    (``services.oauth_client_remove``), so a dynamically registered client (which holds a live
    registration token the token admin refuses to delete) can be removed."""

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        if self.has_delete_permission(request):
            perms_needed = set()  # the tokens go with their client
        return deleted, counts, perms_needed, protected

    def delete_model(self, request, obj):
        services.oauth_client_remove(application=obj, actor_user=request.user)

    def delete_queryset(self, request, queryset):
        for application in queryset:
            services.oauth_client_remove(application=application, actor_user=request.user)


@admin.register(OAuthGrant)
class OAuthGrantAdmin(admin.ModelAdmin):
    """Consents people gave OAuth clients; revoke with the action (tokens die at once)."""

    list_display = ("id", "user", "application", "agent_token", "created_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("user__username", "application__name", "application__client_id")
    readonly_fields = ("user", "application", "agent_token", "resource", "redirect_uri", "code_checksum", "token_family",
                       "created_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke the selected grants and their tokens")
    def revoke(self, request, queryset):
        for grant in queryset:
            services.oauth_grant_revoke(user=grant.user, grant_id=grant.pk, channel="admin")
