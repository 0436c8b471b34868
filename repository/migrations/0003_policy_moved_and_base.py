# The Policy model moved to the policies app (state only), and the snapshot or checkpoint kept
# for the next incremental becomes one strategy-neutral base reference.
import django.db.models.deletion
from django.db import migrations, models


def to_base(apps, schema_editor):
    BackupPoint = apps.get_model("repository", "BackupPoint")
    BackupPoint.objects.exclude(engine_snapshot_id="").update(
        base_kind="snapshot", base_id=models.F("engine_snapshot_id")
    )
    BackupPoint.objects.exclude(engine_checkpoint_id="").update(
        base_kind="checkpoint", base_id=models.F("engine_checkpoint_id")
    )


def from_base(apps, schema_editor):
    BackupPoint = apps.get_model("repository", "BackupPoint")
    BackupPoint.objects.filter(base_kind="snapshot").update(engine_snapshot_id=models.F("base_id"))
    BackupPoint.objects.filter(base_kind="checkpoint").update(engine_checkpoint_id=models.F("base_id"))


class Migration(migrations.Migration):
    dependencies = [
        ("repository", "0002_backuppoint_uuid"),
        ("policies", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="backuppoint",
                    name="policy",
                    field=models.ForeignKey(
                        blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, to="policies.policy"
                    ),
                ),
            ]
        ),
        migrations.AddField(
            model_name="backuppoint",
            name="base_kind",
            field=models.CharField(
                blank=True,
                choices=[("", "None"), ("snapshot", "Snapshot"), ("checkpoint", "Checkpoint")],
                default="",
                help_text="What is kept on the engine for the next incremental: a snapshot, a checkpoint, or nothing.",
                max_length=12,
            ),
        ),
        migrations.AddField(
            model_name="backuppoint",
            name="base_id",
            field=models.CharField(
                blank=True, help_text="The engine's id of that base.", max_length=64, verbose_name="base id"
            ),
        ),
        migrations.RunPython(to_base, from_base),
        migrations.RemoveField(model_name="backuppoint", name="engine_checkpoint_id"),
        migrations.RemoveField(model_name="backuppoint", name="engine_snapshot_id"),
    ]
