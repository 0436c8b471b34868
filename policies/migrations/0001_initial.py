# Policies move from the jobs app to their own. The table stays where it is in this step (state
# only); 0002 renames it.

import core.crypto
import django.core.validators
import django.db.models.deletion
import django.utils.timezone
import policies.validators
import strategies.registry
from django.db import migrations, models


def _relabel(apps, old: str, new: str) -> None:
    # Permissions and admin history follow the model to its new app.
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label=new, model="policy").exists():
        ContentType.objects.filter(app_label=old, model="policy").update(app_label=new)


def move_content_type(apps, schema_editor):
    _relabel(apps, "jobs", "policies")


def move_content_type_back(apps, schema_editor):
    _relabel(apps, "policies", "jobs")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('inventory', '0005_ssh_host_keys'),
        ('jobs', '0006_guest_ssh'),
        ('repository', '0002_backuppoint_uuid'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.CreateModel(
            name='Policy',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=100, unique=True)),
                ('description', models.TextField(blank=True)),
                ('enabled', models.BooleanField(default=True)),
                ('priority', models.IntegerField(default=100, help_text='Lower runs first when jobs compete for slots.')),
                ('strategy', models.CharField(choices=strategies.registry.strategy_choices, default=strategies.registry.default_strategy_name, max_length=30)),
                ('schedule', models.CharField(default='0 1 * * *', help_text='cron', max_length=100, validators=[policies.validators.validate_cron])),
                ('full_every_days', models.PositiveIntegerField(default=7, help_text='Take a full backup when the last full is this many days old; 0 means always full.', validators=[django.core.validators.MinValueValidator(0)])),
                ('max_chain_length', models.PositiveIntegerField(default=14, help_text='Incrementals on one full before a new full.', validators=[django.core.validators.MinValueValidator(1)])),
                ('keep_last', models.PositiveIntegerField(default=7, help_text='Always keep this many newest good points.')),
                ('keep_days', models.PositiveIntegerField(default=0, help_text='Keep points younger than this; 0 disables.')),
                ('keep_daily', models.PositiveIntegerField(default=0)),
                ('keep_weekly', models.PositiveIntegerField(default=0)),
                ('keep_monthly', models.PositiveIntegerField(default=0)),
                ('quiesce', models.BooleanField(default=True, help_text='Freeze guest filesystems through the guest agent.')),
                ('pre_snapshot_command', models.TextField(blank=True, help_text='Run in the guest over SSH before the snapshot.')),
                ('post_snapshot_command', models.TextField(blank=True, help_text='Run in the guest over SSH after the snapshot.')),
                ('guest_ssh_user', models.CharField(default='root', max_length=100, verbose_name='guest SSH user')),
                ('guest_ssh_port', models.PositiveIntegerField(default=22, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(65535)], verbose_name='guest SSH port')),
                ('guest_ssh_private_key', core.crypto.EncryptedTextField(blank=True, help_text='For the pre/post snapshot commands; kept encrypted.', verbose_name='guest SSH private key')),
                ('guest_command_timeout', models.PositiveIntegerField(default=300, help_text='Seconds a pre/post snapshot command may run.', validators=[django.core.validators.MinValueValidator(1)])),
                ('excluded_disks', models.JSONField(blank=True, default=list, help_text='Disk aliases or IDs never backed up.', validators=[policies.validators.validate_string_list])),
                ('match_name_regex', models.CharField(blank=True, help_text='Auto-assign matching VMs.', max_length=200, validators=[policies.validators.validate_regex], verbose_name='VM name regex')),
                ('match_tag', models.CharField(blank=True, max_length=100, verbose_name='VM tag')),
                ('parallel_vms', models.PositiveIntegerField(default=2, validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(64)])),
                ('created', models.DateTimeField(default=django.utils.timezone.now)),
                ('destination', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='policies', to='repository.backupdestination')),
                ('match_cluster', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='inventory.cluster')),
                ('vms', models.ManyToManyField(blank=True, related_name='policies', to='inventory.vm')),
            ],
            options={
                'verbose_name_plural': 'policies',
                'db_table': 'jobs_policy',
                'ordering': ['priority', 'name'],
            },
        )]),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
