from dataclasses import dataclass

from django import forms
from django.db import models
from django.urls import reverse

from core.ssh import normalize_private_key
from inventory.models import VM, Cluster, Tag
from policies.models import Policy
from repository.retention import validate_keep
from strategies.forms import StrategyOptionFields
from strategies.registry import not_available, strategy_options, usable_strategy_choices

# Each field's help, with an example: what the operator reads under the input (the model's help texts
# are shorter, for the API; these say what the value does and show one).
HELP = {
    "name": "How the policy is named on the pages, the API and the command line. E.g. nightly-prod.",
    "description": "What the policy is for, for the people who read it later. "
    "E.g. Production VMs, every night, kept a month on the NAS.",
    "enabled": "A disabled policy runs on no schedule and backs up no VM; its backups are kept. "
    "E.g. off while a new policy is being set up.",
    "priority": "Lower numbers run first when jobs compete for slots, and win a VM that two policies cover. "
    "E.g. 10 for production, 100 for test VMs.",
    "vms": "VMs this policy always backs up, whatever the rules below say. Type in the search box to find them. "
    "E.g. db01 and web01.",
    "match_name_regex": "Also back up every VM whose name matches this Python regular expression (searched "
    "anywhere in the name; ^ and $ to anchor it). E.g. ^prod- for prod-web01 and prod-db01.",
    "match_tag": "Also back up every VM carrying this engine tag. E.g. backup-nightly.",
    "match_cluster": "Also back up every VM of this cluster. E.g. Production.",
    "exclude_name_regex": "Leave out VMs the rules above would add whose name matches this regular expression "
    "(VMs chosen above are still backed up). E.g. -scratch$ or ^tmp-.",
    "exclude_tag": "Leave out VMs the rules above would add that carry this tag (VMs chosen above are still "
    "backed up). E.g. no-backup.",
    "excluded_disks": "Disks never backed up, by alias or ID, one per line. E.g. web01_swap.",
    "schedule": "When the policy runs, as five cron fields: minute, hour, day of month, month, day of week, in "
    "the site's time zone. E.g. 30 1 * * * (01:30 every day), 0 */4 * * * (every 4 hours), "
    "0 22 * * 1-5 (22:00 Monday to Friday).",
    "window_start": "Start of the backup window, site time. Backups still queued at its end are skipped, not "
    "run into working hours. Empty with its end: no window. E.g. 22:00.",
    "window_end": "End of the backup window; may be after midnight. E.g. 06:00 (with a start of 22:00).",
    "destination": "The backup destination the backups are written to. E.g. nas.",
    "strategy": "How the disks' data is read from oVirt. E.g. Disk image transfer (ovirt-imageio), the default; "
    "Change block tracking for incrementals on oVirt 4.4+.",
    "full_every_days": "Take a full backup when the last full is this many days old; 0 means every backup is "
    "full. E.g. 7 for a weekly full and incrementals in between.",
    "full_every_runs": "Also take a full backup every Nth scheduled run (the first run is full); 0 turns this "
    "off. E.g. 10.",
    "max_chain_length": "At most this many incrementals on one full before the next full: a restore reads "
    "through the whole chain. E.g. 14.",
    "quiesce": "Freeze the guest's filesystems through its guest agent while the snapshot is taken, for "
    "consistent backups; a VM without the agent is backed up unfrozen. E.g. on for databases.",
    "parallel_vms": "How many of the policy's VMs are backed up at the same time (1 to 64). E.g. 2; more for a "
    "fast destination and network.",
    "verify_after_backup": "After each run, check the new backups (checksums, qemu-img check, chains). "
    "E.g. on when the destination is a remote share.",
    "verify_weekly": "Once a week, check every backup the policy keeps. E.g. on for backups kept for months.",
    "prove_restores": "At the proof schedule, boot the newest backup of each VM by instant restore, without "
    "network, wait for it to come up (and its guest agent), record that, and discard it. E.g. on for the VMs "
    "you must show can be restored.",
    "proof_schedule": "When the restore proofs start, as five cron fields in the site's time zone; after the "
    "backups, so that they prove last night's. E.g. 0 6 * * * (06:00 every day).",
    "proof_cluster": "The cluster the proofs boot in (the booted VMs have no network); empty for each VM's own "
    "cluster. E.g. Proofs.",
    "change_rate_factor": "Alert when a VM wrote more than this many times its usual between two backups (its "
    "usual: the median rate of its last 10 incrementals), as mass encryption by ransomware or a runaway log "
    "does; the alert and the dashboard give the figures. Empty turns it off. E.g. 5.",
    "keep_last": "Always keep this many newest good backups of each VM (at least 1). E.g. 7.",
    "keep_days": "Also keep every backup younger than this many days; 0 turns this off. E.g. 30.",
    "keep_daily": "Also keep the newest backup of each of this many last days that have one; 0 turns this off. "
    "E.g. 14.",
    "keep_weekly": "Also keep the newest backup of each of this many last weeks; 0 turns this off. E.g. 8.",
    "keep_monthly": "Also keep the newest backup of each of this many last months; 0 turns this off. E.g. 12.",
    "pre_snapshot_command": "A shell command run in the guest over SSH before the snapshot; the backup fails if "
    "it fails. E.g. systemctl stop myapp, or mysql -e 'FLUSH TABLES WITH READ LOCK'.",
    "post_snapshot_command": "A shell command run in the guest over SSH after the snapshot, even when the "
    "snapshot failed. E.g. systemctl start myapp.",
    "guest_ssh_user": "The user the commands run as in the guest. E.g. root, or backup with sudo rights.",
    "guest_ssh_port": "The guest's SSH port. E.g. 22.",
    "guest_ssh_private_key": "The key that logs in to the guests for the commands, in OpenSSH format, kept "
    "encrypted. Write-only: leave empty to keep the stored key. E.g. the output of "
    "ssh-keygen -t ed25519 -N '' -f guest-key (its guest-key file).",
    "clear_guest_ssh_private_key": "Forget the stored key; the commands then log in with the site's own key. "
    "E.g. when the guests trust the site's key instead.",
    "guest_command_timeout": "Seconds a pre- or post-snapshot command may run before it is abandoned and the "
    "backup fails. E.g. 300.",
}
LABELS = {
    "vms": "VMs chosen by name",
    "match_name_regex": "VMs whose name matches",
    "match_tag": "VMs with the tag",
    "match_cluster": "VMs of the cluster",
    "exclude_name_regex": "Except VMs whose name matches",
    "exclude_tag": "Except VMs with the tag",
    "excluded_disks": "Disks never backed up",
    "window_start": "Backup window from",
    "window_end": "Backup window until",
    "full_every_days": "Full backup every (days)",
    "full_every_runs": "Full backup every (runs)",
    "max_chain_length": "Incrementals at most",
    "quiesce": "Freeze the guest's filesystems",
    "parallel_vms": "VMs at a time",
    "verify_after_backup": "Verify after each run",
    "verify_weekly": "Verify every kept backup weekly",
    "prove_restores": "Prove restores",
    "proof_schedule": "Restore proof schedule",
    "proof_cluster": "Restore proof cluster",
    "keep_last": "Keep the last",
    "keep_days": "Keep everything younger than (days)",
    "keep_daily": "Keep daily backups of the last (days)",
    "keep_weekly": "Keep weekly backups of the last (weeks)",
    "keep_monthly": "Keep monthly backups of the last (months)",
    "pre_snapshot_command": "Before the snapshot, run",
    "post_snapshot_command": "After the snapshot, run",
    "guest_command_timeout": "Command timeout (seconds)",
}


@dataclass
class Section:
    """One fieldset of the policy form."""

    key: str
    title: str
    intro: str
    names: list[str]


SECTIONS = [
    Section(
        "what",
        "What",
        "Which VMs the policy backs up: the ones you choose, and those its rules match.",
        [
            "name",
            "enabled",
            "description",
            "vms",
            "match_name_regex",
            "exclude_name_regex",
            "match_tag",
            "exclude_tag",
            "match_cluster",
            "priority",
            "excluded_disks",
        ],
    ),
    Section(
        "when",
        "When",
        "When it runs, and until when a backup may start.",
        ["schedule", "window_start", "window_end"],
    ),
    Section("where", "Where", "Where the backups go, and how their data is read.", ["destination", "strategy"]),
    Section(
        "how",
        "How",
        "Full and incremental backups, consistency, parallelism, and the checks after them.",
        [
            "full_every_days",
            "full_every_runs",
            "max_chain_length",
            "parallel_vms",
            "quiesce",
            "verify_after_backup",
            "verify_weekly",
            "change_rate_factor",
            "prove_restores",
            "proof_schedule",
            "proof_cluster",
        ],  # then every strategy's own options (added in PolicyForm.__init__)
    ),
    Section(
        "retention",
        "Retention",
        "How long backups are kept. Each rule keeps more; a backup a kept one builds on is kept too.",
        ["keep_last", "keep_days", "keep_daily", "keep_weekly", "keep_monthly"],
    ),
    Section(
        "guest",
        "Guest commands",
        "Commands run inside each VM over SSH around its snapshot, e.g. to flush an application to disk.",
        [
            "pre_snapshot_command",
            "post_snapshot_command",
            "guest_ssh_user",
            "guest_ssh_port",
            "guest_ssh_private_key",
            "clear_guest_ssh_private_key",
            "guest_command_timeout",
        ],
    ),
]
# The schedule fields whose words and next runs are shown as they are typed.
PREVIEWED = ("schedule", "proof_schedule")
# Fields across the whole width of their section (on a screen wide enough for two columns).
WIDE = {"description", "vms", "excluded_disks", "schedule", "proof_schedule"}
WIDE |= {"pre_snapshot_command", "post_snapshot_command", "guest_ssh_private_key"}


class VMChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, vm: VM) -> str:
        return f"{vm.name} ({vm.cluster.name})" if vm.cluster else vm.name


class PolicyForm(StrategyOptionFields, forms.ModelForm):
    excluded_disks = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    guest_ssh_private_key = forms.CharField(
        label="Guest SSH private key",
        required=False,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "-----BEGIN OPENSSH PRIVATE KEY-----"}),
    )
    clear_guest_ssh_private_key = forms.BooleanField(label="Remove the stored guest SSH key", required=False)

    class Meta:
        model = Policy
        fields = [
            "name",
            "description",
            "enabled",
            "priority",
            "strategy",
            "destination",
            "schedule",
            "window_start",
            "window_end",
            "full_every_days",
            "full_every_runs",
            "max_chain_length",
            "verify_after_backup",
            "verify_weekly",
            "prove_restores",
            "proof_schedule",
            "proof_cluster",
            "keep_last",
            "keep_days",
            "keep_daily",
            "keep_weekly",
            "keep_monthly",
            "change_rate_factor",
            "quiesce",
            "pre_snapshot_command",
            "post_snapshot_command",
            "guest_ssh_user",
            "guest_ssh_port",
            "guest_command_timeout",
            "excluded_disks",
            "match_name_regex",
            "match_tag",
            "match_cluster",
            "exclude_name_regex",
            "exclude_tag",
            "parallel_vms",
            "vms",
        ]
        field_classes = {"vms": VMChoiceField}
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "pre_snapshot_command": forms.Textarea(attrs={"rows": 2}),
            "post_snapshot_command": forms.Textarea(attrs={"rows": 2}),
            "window_start": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
            "window_end": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
            "vms": forms.CheckboxSelectMultiple,
            "match_tag": forms.TextInput(attrs={"list": "tag-names"}),
            "exclude_tag": forms.TextInput(attrs={"list": "tag-names"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["strategy"].choices = usable_strategy_choices()
        for name, text in HELP.items():
            self.fields[name].help_text = text
        for name, text in LABELS.items():
            self.fields[name].label = text
        self.fields["strategy"].help_text += " " + not_available(strategy_options())
        self.fields["match_cluster"].empty_label = "No cluster rule"
        clusters = models.Q(missing_since=None)
        if self.instance.match_cluster_id:  # a cluster gone from the engine stays the rule until changed
            clusters |= models.Q(pk=self.instance.match_cluster_id)
        self.fields["match_cluster"].queryset = Cluster.objects.filter(clusters).order_by("name", "pk")
        # Every VM the inventory has (the policy's own first, then by name), searchable on the page.
        chosen = list(self.instance.vms.values_list("pk", flat=True)) if self.instance.pk else []
        order = ["name", "pk"]
        if chosen:
            order.insert(0, models.Case(models.When(pk__in=chosen, then=0), default=1))
        self.fields["vms"].queryset = (
            VM.objects.filter(models.Q(missing_since=None) | models.Q(pk__in=chosen))
            .select_related("cluster")
            .order_by(*order)
        )
        self.add_option_fields()
        for name, (cls, option) in self.option_fields.items():
            default = {True: "on", False: "off"}.get(option.default, option.default)
            self.fields[
                name
            ].help_text = (
                f"{option.help} Used only when the strategy is {cls.label}. E.g. {default or 'empty'} (the default)."
            )
        preview = reverse("policy-schedule-preview")
        for name in PREVIEWED:
            self.fields[name].widget.attrs |= {
                "hx-get": preview,
                "hx-trigger": "keyup changed delay:400ms, change",
                "hx-target": f"#{name}-preview",
                # Each preview's latest question wins: an earlier answer arriving last would undo it.
                "hx-sync": f"#{name}-preview:replace",
                "hx-params": name,
                "aria-describedby": f"id_{name}_helptext {name}-preview",
                "autocomplete": "off",
                "spellcheck": "false",
            }
        # The schedule's preview marks the runs outside the backup window: it is asked with the
        # window's ends, and asked again when they change.
        window = ("schedule", "window_start", "window_end")
        self.fields["schedule"].widget.attrs |= {
            "hx-params": ",".join(window),
            "hx-include": "#id_window_start, #id_window_end",
        }
        for name in window[1:]:
            self.fields[name].widget.attrs |= {
                "hx-get": preview,
                "hx-trigger": "change",
                "hx-target": "#schedule-preview",
                "hx-sync": "#schedule-preview:replace",  # one question at a time with the schedule's own
                "hx-params": ",".join(window),
                "hx-include": "#id_schedule, #id_window_start, #id_window_end",
            }
        if self.instance.pk:
            self.initial["excluded_disks"] = "\n".join(self.instance.excluded_disks)
            self.set_initial_options(self.instance.strategy, self.instance.strategy_options)

    def sections(self) -> list[tuple[Section, list[forms.BoundField]]]:
        """The fieldsets in order, each with its bound fields; the strategies' options end "how"."""
        options = [self[name] for name in self.option_fields]
        return [(s, [self[n] for n in s.names] + (options if s.key == "how" else [])) for s in SECTIONS]

    wide_fields = WIDE

    @property
    def tag_names(self) -> list[str]:
        """The engine's tags, offered as the tag rules are typed."""
        return list(Tag.objects.filter(missing_since=None).order_by("name").values_list("name", flat=True).distinct())

    def clean(self):
        cleaned = super().clean()
        if "schedule" in self.errors:
            # Refused here (left empty), the schedule is not put on the policy, so the model's checks
            # against it (the backup window, the proofs) would judge the saved one: judge none.
            self.instance.schedule = ""
        if cleaned.get("strategy"):
            # Options of another strategy than the policy's are refused on their field, naming its own.
            self.instance.strategy_options = self.chosen_options(cleaned["strategy"])
        keep = {
            name: cleaned.get(name) for name in ("keep_last", "keep_days", "keep_daily", "keep_weekly", "keep_monthly")
        }
        if all(value is not None for value in keep.values()):  # a missing one has its own error already
            errors = validate_keep(
                keep_last=keep["keep_last"],
                keep_days=keep["keep_days"],
                daily=keep["keep_daily"],
                weekly=keep["keep_weekly"],
                monthly=keep["keep_monthly"],
            )
            for name, message in errors.items():
                self.add_error(name, message)
        return cleaned

    def clean_guest_ssh_private_key(self):
        try:
            return normalize_private_key(self.cleaned_data["guest_ssh_private_key"])
        except ValueError as e:
            raise forms.ValidationError(str(e)) from None

    def save(self, commit=True):
        policy = super().save(commit=False)
        if self.cleaned_data["clear_guest_ssh_private_key"]:
            policy.guest_ssh_private_key = ""
        if self.cleaned_data["guest_ssh_private_key"]:
            policy.guest_ssh_private_key = self.cleaned_data["guest_ssh_private_key"]
        if commit:
            policy.save()
            self.save_m2m()
        return policy

    def clean_excluded_disks(self):
        return [line.strip() for line in self.cleaned_data["excluded_disks"].splitlines() if line.strip()]
