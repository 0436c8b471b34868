# The Policy model moved to the policies app: the jobs app forgets it (state only; its table is
# renamed by policies 0002).
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0006_guest_ssh"),
        ("policies", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="job",
                    name="policy",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="jobs",
                        to="policies.policy",
                    ),
                ),
                migrations.DeleteModel(name="Policy"),
            ]
        ),
    ]
