import uuid

from django.db import migrations, models


def move_to_generic_references(apps, schema_editor):
    """Jobs stop pointing at policies and runs (jobs 0015 drops those columns): a job's policy becomes
    what started it, and a run's jobs its job group."""
    ContentType = apps.get_model("contenttypes", "ContentType")
    Job = apps.get_model("jobs", "Job")
    PolicyRun = apps.get_model("policies", "PolicyRun")
    policy_type, _ = ContentType.objects.get_or_create(app_label="policies", model="policy")
    Job.objects.exclude(policy=None).update(started_by_type=policy_type, started_by_id=models.F("policy_id"))
    for run in PolicyRun.objects.all().only("pk"):
        group = uuid.uuid4()
        PolicyRun.objects.filter(pk=run.pk).update(job_group=group)
        Job.objects.filter(run_id=run.pk).update(group=group)


class Migration(migrations.Migration):
    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("jobs", "0014_generic_kinds_started_by_group"),
        ("policies", "0004_ticker_schedule"),
    ]
    # The copy reads the jobs' policy and run columns: it runs before the jobs app drops them.
    run_before = [("jobs", "0015_job_policy_run_removed")]

    operations = [
        migrations.AddField(
            model_name="policyrun",
            name="job_group",
            field=models.UUIDField(editable=False, null=True),
        ),
        migrations.RunPython(move_to_generic_references, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="policyrun",
            name="job_group",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]
