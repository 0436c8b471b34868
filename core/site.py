"""What every node of a site must share with the others: its two keys and the version of its code.

Nodes share one database and one broker. A node with another CREDENTIALS_KEY cannot read a single
engine password, one with another SECRET_KEY cannot read the tasks the others queue (django-q2 signs
them with it), and one with other code may not understand the schema. So the database keeps a check
value of each key (a value made with the key, never the key: core.models.KeyCheck) and the version
of the code that last migrated it (core.models.SiteVersion); a node whose keys or version differ
refuses to start, saying which and what to do.

When the check values are written: by `migrate` (a post_migrate receiver, core.apps), else by the
first worker or web start that finds none. Migrate is the step every new site runs first, as soon as
the table exists and before anything can store a credential, so the keys recorded are the first
node's; `init_secrets` runs before the tables exist and so cannot. A site that ran before this check
existed gets its values at its next migrate, after its CREDENTIALS_KEY has been tried on the
credentials already stored: a key that cannot read them is refused, never recorded.
"""

import hmac
import re

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone
from django.utils.crypto import salted_hmac

from core import version as code_version
from core.secrets import key_path

# The text each check value is made from. Changing it makes every site's check values wrong.
CHECK_TEXT = "oVirt Backup: this is the site's key"
SECRET_KEY_SALT = "core.site.KeyCheck"


class NodeRefused(CommandError, ImproperlyConfigured):
    """This node may not start on this site: the message says why and what to do. (A CommandError:
    a management command prints it without a traceback, and exits 1.)"""


def make_check_value(key: str) -> str:
    if key == "SECRET_KEY":
        return salted_hmac(SECRET_KEY_SALT, CHECK_TEXT, secret=settings.SECRET_KEY, algorithm="sha256").hexdigest()
    return Fernet(settings.CREDENTIALS_KEY.encode()).encrypt(CHECK_TEXT.encode()).decode()


def key_matches(key: str, value: str) -> bool:
    if key == "SECRET_KEY":
        return hmac.compare_digest(make_check_value("SECRET_KEY"), value)
    try:
        return Fernet(settings.CREDENTIALS_KEY.encode()).decrypt(value.encode()).decode() == CHECK_TEXT
    except (InvalidToken, ValueError):  # another key, or not a Fernet key at all
        return False


def key_source(key: str) -> str:
    import os

    if os.environ.get(key):
        return f"{key} in this node's environment"
    return str(key_path(key))


KEY_USE = {
    "SECRET_KEY": "it cannot read the tasks the other nodes queue, nor the sessions they sign",
    "CREDENTIALS_KEY": "it cannot read the credentials stored in the database",
}


def wrong_key_message(key: str, check) -> str:
    made = timezone.localtime(check.made).strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"{key} is not this site's: {KEY_USE[key]} (check value made {made} by node {check.made_by}). "
        f"This node's key comes from {key_source(key)}. Copy the key of the first node (its DATA_DIR/"
        f"{key_path(key).name}, or its {key} setting) into {key_path(key)} on this node or into its "
        f"{key} environment variable, and start it again."
    )


def tables_exist(using: str = DEFAULT_DB_ALIAS) -> bool:
    from core.models import KeyCheck, SiteVersion

    names = set(connections[using].introspection.table_names())
    return {KeyCheck._meta.db_table, SiteVersion._meta.db_table} <= names


def unreadable_credential(using: str = DEFAULT_DB_ALIAS) -> str:
    """Where a stored credential this node's CREDENTIALS_KEY cannot decrypt is ("" if none): tried
    on one value of each encrypted column, before a key is recorded as the site's."""
    from core.crypto import EncryptedTextField

    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if not isinstance(field, EncryptedTextField):
                continue
            try:
                model._base_manager.using(using).exclude(**{field.attname: ""}).values_list(field.attname).first()
            except ValueError:  # core.crypto.decrypt: not the key it was encrypted with
                return f"{model._meta.label} {field.name}"
    return ""


def record_key_checks(*, node_name: str, using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """Write the check value of each key the database has none of, with this node's keys; the keys
    written. Refused (NodeRefused) when this node's CREDENTIALS_KEY cannot read what is stored."""
    from core.models import KeyCheck

    have = set(KeyCheck.objects.using(using).values_list("key", flat=True))
    # Before anything is written: a node refused here records neither key.
    if "CREDENTIALS_KEY" not in have and (column := unreadable_credential(using)):
        key = "CREDENTIALS_KEY"
        raise NodeRefused(
            f"CREDENTIALS_KEY is not this site's: it cannot read the credentials stored in the database "
            f"({column}). This node's key comes from {key_source(key)}. Copy the key of the node that stored "
            f"them (its DATA_DIR/{key_path(key).name}, or its CREDENTIALS_KEY setting) into "
            f"{key_path(key)} on this node or into its CREDENTIALS_KEY environment variable."
        )
    written = []
    for key in KeyCheck.Key.values:
        if key in have:
            continue
        # A second node writing at the same instant keeps the first row: its own is then checked.
        _, created = KeyCheck.objects.using(using).get_or_create(
            key=key, defaults={"value": make_check_value(key), "made_by": node_name}
        )
        if created:
            written.append(key)
    return written


def key_problems(using: str = DEFAULT_DB_ALIAS) -> list[str]:
    from core.models import KeyCheck

    return [
        wrong_key_message(check.key, check)
        for check in KeyCheck.objects.using(using).all()
        if not key_matches(check.key, check.value)
    ]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def record_site_version(*, node_name: str, using: str = DEFAULT_DB_ALIAS) -> bool:
    """After a migrate: this code's version becomes the site's, unless the site's is newer (an older
    node's migrate changes nothing in the schema, and must not make the newer nodes look wrong).
    True when written."""
    from core.models import SiteVersion

    ours = code_version.VERSION
    site = SiteVersion.objects.using(using).first()
    if site is not None and (site.version == ours or _version_key(ours) < _version_key(site.version)):
        return False
    if site is not None and _schema_has_unknown_migrations(using):
        return False
    SiteVersion.objects.using(using).update_or_create(
        pk=site.pk if site else 1, defaults={"version": ours, "migrated": timezone.now(), "migrated_by": node_name}
    )
    return True


def _schema_has_unknown_migrations(using: str) -> bool:
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(connections[using], ignore_no_migrations=True)
    labels = {config.label for config in apps.get_app_configs()}
    return any(app in labels and (app, name) not in loader.disk_migrations for app, name in loader.applied_migrations)


def version_problem(using: str = DEFAULT_DB_ALIAS) -> str:
    from core.models import SiteVersion

    ours = code_version.VERSION
    site = SiteVersion.objects.using(using).first()
    if site is None or site.version == ours:
        return ""
    migrated = timezone.localtime(site.migrated).strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"This node runs version {ours} of the code, and the site version {site.version} (its database was "
        f"migrated {migrated} by node {site.migrated_by}). Every node of a site runs the same version: install "
        f"{site.version} on this node. To upgrade the whole site instead, stop every node, install the new "
        "version on each, and run `make migrate` once."
    )


def site_problems(*, node_name: str, check_version: bool, using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """Why this process may not run on this site's database (none: it may), after writing the check
    values and the version a site without them gets from its first start."""
    if not tables_exist(using):
        return [
            f"The database ({settings.DATABASES[using]['NAME']}) has not been migrated: run `make migrate` "
            "(or `python manage.py migrate`) first."
        ]
    record_key_checks(node_name=node_name, using=using)
    problems = key_problems(using)
    if check_version:
        from core.models import SiteVersion

        if not SiteVersion.objects.using(using).exists():
            record_site_version(node_name=node_name, using=using)
        problems += [p for p in [version_problem(using)] if p]
    return problems


def check_node_can_join(node_name: str) -> None:
    """A worker node's start-up checks: the site's keys and version. Refuses (NodeRefused, naming
    the key or both versions) rather than start a node that would fail every job it took."""
    problems = site_problems(node_name=node_name, check_version=True)
    if problems:
        raise NodeRefused(f"Node {node_name} cannot join this site:\n- " + "\n- ".join(problems))


def check_web_can_start() -> None:
    """The web server's start-up check: its keys must be the site's (sessions, tasks, credentials)."""
    problems = site_problems(node_name=settings.NODE_NAME, check_version=False)
    if problems:
        raise NodeRefused("The web server cannot start on this site:\n- " + "\n- ".join(problems))
