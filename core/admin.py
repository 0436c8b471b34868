"""The Django admin's pages for users and API tokens, held to the rules the site's own pages follow."""

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.forms import UserChangeForm
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import redirect

from core import roles
from core.audit import record_request
from core.models import ApiToken, AuditEvent
from core.tokens import revoke_token

User = get_user_model()


class GuardedUserChangeForm(UserChangeForm):
    def clean(self):
        cleaned = super().clean()
        user = self.instance
        is_superuser = cleaned.get("is_superuser", user.is_superuser)
        groups = cleaned.get("groups")
        in_admin_group = (
            groups.filter(name=roles.ADMIN).exists() if groups is not None else roles.role_of(user) == roles.ADMIN
        )
        if roles.removes_last_admin(
            user,
            role=roles.ADMIN if in_admin_group else None,
            is_active=cleaned.get("is_active", user.is_active),
            is_superuser=is_superuser,
        ):
            raise ValidationError(roles.LAST_ADMIN)
        return cleaned


@admin.action(permissions=["delete"], description=delete_selected.short_description)
@transaction.atomic  # the check and the deletion, one after another across requests
def delete_selected_users(modeladmin, request, queryset):
    # Checked on the confirmation page and again when it is confirmed.
    if roles.removes_every_admin(queryset):
        modeladmin.message_user(request, roles.LAST_ADMIN, messages.ERROR)
        return None
    return delete_selected(modeladmin, request, queryset)


class GuardedUserAdmin(UserAdmin):
    """Django's user admin, except that no change, deletion or bulk deletion leaves the site without an admin."""

    form = GuardedUserChangeForm

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            _, name, description = actions["delete_selected"]
            actions[name] = (delete_selected_users, name, description)
        return actions

    # The Django admin changes users too: the audit log records it as any page would.
    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        record_request(request, action="user_changed" if change else "user_created", target=obj)

    def delete_model(self, request, obj) -> None:
        pk = obj.pk
        super().delete_model(request, obj)
        obj.pk = pk
        record_request(request, action="user_deleted", target=obj)

    def delete_queryset(self, request, queryset) -> None:
        users = list(queryset)
        super().delete_queryset(request, queryset)
        for user in users:
            record_request(request, action="user_deleted", target=user)

    def delete_view(self, request, object_id, extra_context=None):
        user = self.get_object(request, unquote(object_id))
        if user is not None and roles.removes_every_admin([user]):
            self.message_user(request, roles.LAST_ADMIN, messages.ERROR)
            return redirect("admin:auth_user_change", user.pk)
        return super().delete_view(request, object_id, extra_context)


admin.site.unregister(User)
admin.site.register(User, GuardedUserAdmin)


class RoleGroupAdmin(GroupAdmin):
    """The role groups are the roles (core.roles reads them by name): renaming or deleting the
    admin group would demote every admin at once, so they are shown, never changed here."""

    def has_change_permission(self, request, obj=None):
        return (obj is None or obj.name not in roles.ROLES) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return (obj is None or obj.name not in roles.ROLES) and super().has_delete_permission(request, obj)

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset.exclude(name__in=roles.ROLES))

    def get_actions(self, request):
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            _, name, description = actions["delete_selected"]
            actions[name] = (delete_selected_groups, name, description)
        return actions


@admin.action(permissions=["delete"], description=delete_selected.short_description)
def delete_selected_groups(modeladmin, request, queryset):
    if queryset.filter(name__in=roles.ROLES).exists():
        modeladmin.message_user(request, "The role groups (admin, operator, viewer) cannot be deleted.", messages.ERROR)
        return None
    return delete_selected(modeladmin, request, queryset)


admin.site.unregister(Group)
admin.site.register(Group, RoleGroupAdmin)


@admin.action(description="Revoke selected tokens")
def revoke_selected(modeladmin, request, queryset):
    for token in queryset:
        revoke_token(token=token)
        record_request(request, action="token_revoked", target=token, user=token.user.username)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are made where their key can be shown once (the API tokens page, the API, create_token)."""

    list_display = ("prefix", "name", "user", "created", "expires", "last_used", "revoked")
    list_filter = ("revoked",)
    search_fields = ("prefix", "name", "user__username")
    fields = ("user", "name", "prefix", "created", "expires", "last_used", "revoked")
    readonly_fields = fields
    actions = [revoke_selected]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: the audit log is written by the site, never edited or pruned by hand."""

    list_display = ("time", "actor_name", "source", "action", "target_type", "target_name", "remote_address")
    list_filter = ("source", "action")
    search_fields = ("actor_name", "target_name", "action")
    date_hierarchy = "time"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
