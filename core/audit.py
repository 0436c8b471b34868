"""The audit log: who did what, when, and from where (page, API, command line, schedule).

Every app records through `record` (or `record_request` in a view), so each entry has one shape.
"""

import getpass
import logging

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import models
from django.dispatch import receiver
from django.http import HttpRequest

from core.logins import client_address
from core.models import AuditEvent

log = logging.getLogger("audit")

Source = AuditEvent.Source


def record(
    *,
    actor,
    source: str,
    action: str,
    target: models.Model | None = None,
    address: str | None = None,
    **details,
) -> AuditEvent:
    """Add one entry. `actor` is a user, a name (a failed login, the account running a command), or None."""
    user = actor if actor is not None and not isinstance(actor, str) and actor.is_authenticated else None
    name = user.get_username() if user is not None else actor if isinstance(actor, str) else ""
    limit = AuditEvent._meta.get_field("target_name").max_length
    event = AuditEvent.objects.create(
        actor=user,
        actor_name=name[:150],
        source=source,
        action=action,
        target_type=target._meta.model_name if target is not None else "",
        target_id=str(target.pk) if target is not None and target.pk is not None else "",
        target_name=str(target)[:limit] if target is not None else "",
        details=details,
        remote_address=address or None,
    )
    log.info("%s", event)
    return event


def source_of(request: HttpRequest) -> str:
    return Source.API if request.path.startswith("/api/") else Source.PAGE


def record_request(request: HttpRequest, *, action: str, target: models.Model | None = None, **details) -> AuditEvent:
    """An entry for what a person did through a page or the API."""
    return record(
        actor=request.user,
        source=source_of(request),
        action=action,
        target=target,
        address=client_address(request),
        **details,
    )


def command_user() -> str:
    """Who runs a management command: the operating-system account (there is no login)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def record_command(*, action: str, target: models.Model | None = None, **details) -> AuditEvent:
    """An entry for what a management command did."""
    return record(actor=command_user(), source=Source.CLI, action=action, target=target, **details)


@receiver(user_logged_in, dispatch_uid="audit_login")
def _logged_in(sender, request, user, **kwargs) -> None:
    record(actor=user, source=_login_source(request), action="login", address=_address(request))


@receiver(user_logged_out, dispatch_uid="audit_logout")
def _logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        record(actor=user, source=_login_source(request), action="logout", address=_address(request))


@receiver(user_login_failed, dispatch_uid="audit_login_failed")
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    # Only the name tried is kept, never the password (Django already masks it in `credentials`).
    name = str(credentials.get("username", ""))
    record(actor=name, source=_login_source(request), action="login_failed", address=_address(request))


def _login_source(request) -> str:
    return source_of(request) if request is not None else Source.SYSTEM


def _address(request) -> str | None:
    return client_address(request) if request is not None else None


class AuditedModelViewSet:
    """A DRF viewset mixin (listed first) recording creations, changes and deletions as
    `<audit_name>_created`, `_changed` and `_deleted`, e.g. policy_changed."""

    audit_name: str = ""

    def perform_create(self, serializer) -> None:
        super().perform_create(serializer)
        record_request(self.request, action=f"{self.audit_name}_created", target=serializer.instance)

    def perform_update(self, serializer) -> None:
        super().perform_update(serializer)
        changed = sorted(k for k in serializer.validated_data)
        record_request(self.request, action=f"{self.audit_name}_changed", target=serializer.instance, fields=changed)

    def perform_destroy(self, instance) -> None:
        # Named before it goes; recorded only once it is gone (a refused delete changed nothing).
        pk, name = instance.pk, str(instance)
        super().perform_destroy(instance)
        instance.pk = pk
        record_request(self.request, action=f"{self.audit_name}_deleted", target=instance, name=name)
