"""DRF's tokens (rest_framework.authtoken) kept their keys in clear text. Each one still in the
database becomes an ApiToken holding only the key's hash, expiring API_TOKEN_DAYS from now, so
scripts keep working meanwhile; then the clear-text table is dropped."""

import hashlib
from datetime import UTC, timedelta

from django.conf import settings
from django.db import migrations
from django.utils import timezone
from django.utils.dateparse import parse_datetime

DRF_TABLE = "authtoken_token"


def aware(value):
    # The raw query gives what the driver gives: an aware datetime (PostgreSQL), a naive UTC one or text.
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    return value


def adopt_drf_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if DRF_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("core", "ApiToken")
    now = timezone.now()
    days = getattr(settings, "API_TOKEN_DAYS", 90)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT key, user_id, created FROM {DRF_TABLE}")
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        if ApiToken.objects.filter(prefix=key[:8]).exists():
            continue  # two old keys with the same first characters: the second must be re-created
        ApiToken.objects.create(
            user_id=user_id,
            name="Token from before hashed tokens",
            prefix=key[:8],
            key_hash=hashlib.sha256(key.encode()).hexdigest(),
            created=aware(created) or now,
            expires=now + timedelta(days=days) if days else None,
        )
    schema_editor.execute(schema_editor.sql_delete_table % {"table": schema_editor.quote_name(DRF_TABLE)})


class Migration(migrations.Migration):
    dependencies = [("core", "0002_api_tokens")]
    operations = [migrations.RunPython(adopt_drf_tokens, migrations.RunPython.noop)]
