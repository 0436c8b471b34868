"""Rows every app may rely on: the API tokens people and scripts sign in with."""

import functools
import hashlib
import hmac

from django.apps import apps
from django.conf import settings
from django.db import models
from django.utils import timezone

from core.crypto import EncryptedTextField


def hash_key(key: str) -> str:
    # A key is 32 random bytes: a plain sha256 is enough, there is nothing to guess by brute force.
    return hashlib.sha256(key.encode()).hexdigest()


class ApiToken(models.Model):
    """A key a user's scripts give the API. Only its hash is kept: the key is shown once, when made."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What it is for, e.g. the script or host using it.")
    # The key's first characters, not secret: finds the row and tells tokens apart in lists.
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    created = models.DateTimeField(default=timezone.now)
    expires = models.DateTimeField(null=True, blank=True)
    last_used = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-pk"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(self.key_hash, hash_key(key))

    def is_expired(self, now=None) -> bool:
        return self.expires is not None and self.expires <= (now or timezone.now())

    @property
    def state(self) -> str:
        if self.revoked:
            return "revoked"
        return "expired" if self.is_expired() else "active"


class AuditEventQuerySet(models.QuerySet):
    # The log is written once and never changed: a bulk change is refused like a single one.
    def update(self, **kwargs):
        raise PermissionError("The audit log cannot be changed.")

    def delete(self):
        raise PermissionError("The audit log cannot be deleted from.")


class AuditEvent(models.Model):
    """Who did what, when, from where. Written by `core.audit.record` only; never changed."""

    class Source(models.TextChoices):
        PAGE = "page", "Page"
        API = "api", "API"
        CLI = "cli", "Command line"
        SCHEDULE = "schedule", "Schedule"
        SYSTEM = "system", "System"

    time = models.DateTimeField(default=timezone.now, db_index=True)
    # The name is kept as text too: the log outlives the user it names.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    action = models.CharField(max_length=50, db_index=True)
    target_type = models.CharField(max_length=50, blank=True)
    target_id = models.CharField(max_length=50, blank=True)
    target_name = models.CharField(max_length=200, blank=True)
    details = models.JSONField(default=dict, blank=True)
    remote_address = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-pk"]

    def __str__(self) -> str:
        target = f" {self.target_type} {self.target_name or self.target_id}" if self.target_type else ""
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor_name or '-'} {self.action}{target}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise PermissionError("The audit log cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("The audit log cannot be deleted from.")

    @property
    def target_kind(self) -> str:
        """What the target is, as its model names itself ("Backup point"), never its key ("backuppoint")."""
        return model_label(self.target_type)


class SiteSshKey(models.Model):
    """The site's own SSH key pair (one row): hosts authorize its public key for root, as they would a
    backup appliance's. Made at first use; the private key is encrypted like every credential."""

    private_key = EncryptedTextField()
    public_key = models.TextField()
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "site SSH key"

    def __str__(self) -> str:
        return "site SSH key"


class KeyCheck(models.Model):
    """Proof of which SECRET_KEY and CREDENTIALS_KEY are the site's, kept in the shared database so a
    node with other keys is refused at start (core.site): a value made with the key, never the key."""

    class Key(models.TextChoices):
        SECRET_KEY = "SECRET_KEY", "SECRET_KEY"
        CREDENTIALS_KEY = "CREDENTIALS_KEY", "CREDENTIALS_KEY"

    key = models.CharField(max_length=20, choices=Key.choices, unique=True)
    # SECRET_KEY: an HMAC of a fixed text; CREDENTIALS_KEY: a Fernet token of a fixed text.
    value = models.TextField()
    made = models.DateTimeField(default=timezone.now)
    made_by = models.CharField(max_length=100, help_text="The node (NODE_NAME) whose key it was made with.")

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"check value of {self.key}"


class SiteVersion(models.Model):
    """The version of the code that last migrated the site's database (one row): every node of the
    site must run it (core.site)."""

    version = models.CharField(max_length=40)
    migrated = models.DateTimeField(default=timezone.now)
    migrated_by = models.CharField(max_length=100, help_text="The node (NODE_NAME) that ran the migration.")

    def __str__(self) -> str:
        return f"site version {self.version}"


@functools.cache
def _verbose_names() -> dict[str, str]:
    return {m._meta.model_name: str(m._meta.verbose_name) for m in apps.get_models()}


def model_label(model_name: str) -> str:
    """A model's name for people from its key ("backuppoint" -> "Backup point"); any model of the site
    (found through the app registry: this layer imports none of the apps above it)."""
    name = _verbose_names().get(model_name, model_name)
    return name[:1].upper() + name[1:]
