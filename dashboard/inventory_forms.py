from django import forms

from inventory.models import VM
from policies.models import Policy

BACKUP, ASSIGN = "backup", "assign"


class VmBulkForm(forms.Form):
    """The VMs ticked on the inventory list and what to do with them."""

    action = forms.ChoiceField(choices=[(BACKUP, "Back up selected"), (ASSIGN, "Assign to policy")])
    vm = forms.ModelMultipleChoiceField(
        queryset=VM.objects.filter(missing_since=None).order_by("name"),
        error_messages={"required": "Tick the VMs first: no VM was selected."},
    )
    policy = forms.ModelChoiceField(queryset=Policy.objects.order_by("name"), required=False)

    def clean(self):
        data = super().clean()
        if data.get("action") == ASSIGN and not data.get("policy"):
            self.add_error("policy", "Choose the policy to list the selected VMs in.")
        return data
