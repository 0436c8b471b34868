from django import forms

from inventory.models import VM
from policies.models import Policy
from repository.models import BackupDestination

BACKUP, ASSIGN = "backup", "assign"


class VmBulkForm(forms.Form):
    """The VMs ticked on the inventory list and what to do with them."""

    action = forms.ChoiceField(choices=[(BACKUP, "Back up selected"), (ASSIGN, "Assign to policy")])
    vm = forms.ModelMultipleChoiceField(
        queryset=VM.objects.filter(missing_since=None).order_by("name"),
        error_messages={"required": "Tick the VMs first: no VM was selected."},
    )
    policy = forms.ModelChoiceField(queryset=Policy.objects.order_by("name"), required=False)
    # As on a VM's "Back up now" page (strategies.forms.BackupNowForm): left empty, each VM's backup
    # goes to its policy's destination; one chosen takes every ticked VM's backup, and is what a VM
    # no policy covers needs.
    destination = forms.ModelChoiceField(
        queryset=BackupDestination.objects.filter(enabled=True).order_by("name"),
        required=False,
        empty_label="Each VM's policy destination",
        error_messages={
            "invalid_choice": "There is no enabled destination %(value)s (removed or disabled since the page was "
            "loaded?): choose one in the Destination list."
        },
    )

    def clean(self):
        data = super().clean()
        if data.get("action") == ASSIGN and not data.get("policy"):
            self.add_error("policy", "Choose the policy to list the selected VMs in.")
        return data
