"""Who may do what. Pages and the API both ask this module and nothing else.

Three roles, as Django groups created by a migration:
- viewer: reads everything except credentials;
- operator: also edits policies and runs backups, restores and syncs;
- admin: also manages users, managers, hosts' credentials and destinations.
"""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission

ADMIN = "admin"
OPERATOR = "operator"
VIEWER = "viewer"
ROLES = (ADMIN, OPERATOR, VIEWER)
ROLE_CHOICES = [(ADMIN, "Admin"), (OPERATOR, "Operator"), (VIEWER, "Viewer")]

# The actions a page or endpoint can require, and the roles allowed each.
VIEW = "view"
OPERATE = "operate"
ADMINISTER = "administer"
ALLOWED = {
    VIEW: {ADMIN, OPERATOR, VIEWER},
    OPERATE: {ADMIN, OPERATOR},
    ADMINISTER: {ADMIN},
}


def role_of(user) -> str | None:
    """The strongest role a user holds, or None (no access at all)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return ADMIN
    names = {g.name for g in user.groups.all()}
    for role in ROLES:
        if role in names:
            return role
    return None


def can(user, action: str) -> bool:
    if action not in ALLOWED:
        raise ImproperlyConfigured(f"unknown action {action!r}")
    return role_of(user) in ALLOWED[action]


def set_role(user, role: str) -> None:
    from django.contrib.auth.models import Group

    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    user.groups.remove(*Group.objects.filter(name__in=ROLES))
    user.groups.add(Group.objects.get_or_create(name=role)[0])


LAST_ADMIN = "This is the last active admin: make another user an admin first, or the site has none."


def active_admins():
    from django.contrib.auth import get_user_model
    from django.db.models import Q

    return get_user_model().objects.filter(is_active=True).filter(Q(is_superuser=True) | Q(groups__name=ADMIN))


def _lock_admins() -> None:
    """Inside a transaction, take the admin group's row lock until it ends: two requests demoting the
    last two admins at once then check one after the other, not both before either writes. (SQLite
    writers are serialised already.)"""
    from django.contrib.auth.models import Group
    from django.db import connection

    if connection.in_atomic_block:
        list(Group.objects.select_for_update().filter(name=ADMIN).values_list("pk", flat=True))


def removes_last_admin(user, *, role: str | None, is_active: bool, is_superuser: bool | None = None) -> bool:
    """Whether giving `user` this role and activity would leave the site without an active admin.

    `is_superuser` is the flag the change would leave (the Django admin edits it); by default it stays.
    Call it in the transaction that makes the change, so that concurrent changes wait their turn.
    """
    if user.pk is None or role_of(user) != ADMIN:
        return False
    _lock_admins()
    if is_superuser is None:
        is_superuser = user.is_superuser
    if is_active and (role == ADMIN or is_superuser):
        return False
    return not active_admins().exclude(pk=user.pk).exists()


def removes_every_admin(users) -> bool:
    """Whether deleting all of `users` at once would leave the site without an active admin."""
    users = list(users)
    if not any(role_of(u) == ADMIN for u in users):
        return False
    _lock_admins()
    return not active_admins().exclude(pk__in=[u.pk for u in users]).exists()


def role_required(action: str):
    """Decorator for page views: log in first, then the role must allow `action`."""
    if action not in ALLOWED:
        raise ImproperlyConfigured(f"unknown action {action!r}")

    def decorate(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not can(request.user, action):
                raise PermissionDenied(f"Your role may not {action} here.")
            return view(request, *args, **kwargs)

        wrapper.role_action = action
        return wrapper

    return decorate


class RolePermission(BasePermission):
    """DRF permission reading `role_rules` from the view.

    `role_rules = {"read": VIEW, "write": ADMINISTER, "backup": OPERATE}`: safe methods need
    "read", other methods "write", and a named extra action its own entry. A view without
    rules is a programming error, not an open door.
    """

    def has_permission(self, request, view) -> bool:
        rules = getattr(view, "role_rules", None)
        if not rules:
            raise ImproperlyConfigured(f"{type(view).__name__} declares no role_rules")
        if not request.user or not request.user.is_authenticated:
            return False
        action = getattr(view, "action", None)
        if action in rules:
            needed = rules[action]
        elif request.method in SAFE_METHODS:
            needed = rules["read"]
        else:
            needed = rules["write"]
        return can(request.user, needed)


def context_processor(request):
    user = getattr(request, "user", None)
    role = role_of(user)
    return {
        "user_role": role,
        "can_operate": role in ALLOWED[OPERATE],
        "can_administer": role in ALLOWED[ADMINISTER],
    }
