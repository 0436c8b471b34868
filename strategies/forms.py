from django import forms

from repository.models import BackupDestination
from strategies.backup import covering_policy
from strategies.registry import not_available, strategy_options


class BackupNowForm(forms.Form):
    """'Back up now' on a VM: the policy's settings unless the operator chooses otherwise."""

    destination = forms.ModelChoiceField(
        queryset=BackupDestination.objects.filter(enabled=True),
        required=False,
        empty_label="The VM's policy destination",
    )
    strategy = forms.ChoiceField(required=False)
    type = forms.ChoiceField(
        choices=[("auto", "Incremental when possible"), ("full", "Full"), ("incremental", "Incremental")],
        initial="auto",
    )

    netcat = forms.BooleanField(
        required=False,
        label="SSH transfer through netcat",
        help_text="Faster, but netcat traffic is not encrypted: use it only on a network you trust.",
    )

    def __init__(self, *args, vm=None, **kwargs):
        super().__init__(*args, **kwargs)
        offered = strategy_options(vm) if vm else []
        options = [("", "The VM's policy strategy")] + [(name, label) for name, label, reason in offered if not reason]
        self.fields["strategy"].choices = options
        self.fields["strategy"].help_text = not_available(offered)
        # The policy the inventory shows, explicit or by its rules: the same answer as the backup's.
        self.policy = covering_policy(vm) if vm else None
        self.has_policy = self.policy is not None
        if not self.has_policy:
            self.fields["destination"].required = True
            self.fields["destination"].empty_label = None
            self.fields["strategy"].choices = options[1:]
