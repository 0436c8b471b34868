import uuid

from django.db import migrations, models


def fill_uuids(apps, schema_editor):
    BackupPoint = apps.get_model("repository", "BackupPoint")
    for point in BackupPoint.objects.filter(uuid=None):
        point.uuid = uuid.uuid4()
        point.save(update_fields=["uuid"])


class Migration(migrations.Migration):
    dependencies = [("repository", "0001_initial")]
    operations = [
        migrations.AddField("backuppoint", "uuid", models.UUIDField(null=True, editable=False)),
        migrations.RunPython(fill_uuids, migrations.RunPython.noop),
        migrations.AlterField(
            "backuppoint",
            "uuid",
            models.UUIDField(default=uuid.uuid4, editable=False, help_text="BACKUP_ID on disk", unique=True),
        ),
    ]
