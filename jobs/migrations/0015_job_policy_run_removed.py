from django.db import migrations


class Migration(migrations.Migration):
    # policies 0005 moved what these columns held to Job.started_by and Job.group first (its run_before):
    # the jobs app names no app above it, not even here.
    dependencies = [("jobs", "0014_generic_kinds_started_by_group")]

    operations = [
        migrations.RemoveField(model_name="job", name="policy"),
        migrations.RemoveField(model_name="job", name="run"),
    ]
