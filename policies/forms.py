from django import forms

from core.ssh import normalize_private_key
from policies.models import Policy
from repository.retention import validate_keep
from strategies.forms import StrategyOptionFields
from strategies.registry import not_available, strategy_options, usable_strategy_choices


class PolicyForm(StrategyOptionFields, forms.ModelForm):
    excluded_disks = forms.CharField(
        required=False, help_text="Disk aliases or IDs, one per line.", widget=forms.Textarea(attrs={"rows": 3})
    )
    guest_ssh_private_key = forms.CharField(
        label="Guest SSH private key",
        required=False,
        strip=False,
        help_text="For the pre/post snapshot commands. Write-only: leave empty to keep the stored key.",
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
        ]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 2}),
            "pre_snapshot_command": forms.Textarea(attrs={"rows": 2}),
            "post_snapshot_command": forms.Textarea(attrs={"rows": 2}),
            "window_start": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
            "window_end": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["strategy"].choices = usable_strategy_choices()
        self.fields["strategy"].help_text = not_available(strategy_options())
        self.add_option_fields()
        if self.instance.pk:
            self.initial["excluded_disks"] = "\n".join(self.instance.excluded_disks)
            self.set_initial_options(self.instance.strategy, self.instance.strategy_options)

    def clean(self):
        cleaned = super().clean()
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
