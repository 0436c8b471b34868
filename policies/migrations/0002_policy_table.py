# The policies table and its VM table take the app's names (jobs_policy -> policies_policy).

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('policies', '0001_initial'),
        ('jobs', '0007_policy_moved'),
        ('repository', '0003_policy_moved_and_base'),
    ]

    operations = [
        migrations.AlterModelTable(
            name='policy',
            table=None,
        ),
    ]
