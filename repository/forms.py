from django import forms

from repository.models import BackupDestination
from strategies import STRATEGIES


class BackupDestinationForm(forms.ModelForm):
    class Meta:
        model = BackupDestination
        fields = ["name", "kind", "path", "enabled"]


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

    def __init__(self, *args, vm=None, **kwargs):
        super().__init__(*args, **kwargs)
        from strategies.base import REGISTRY

        options = [("", "The VM's policy strategy")]
        for name, label, reason in vm.strategy_options() if vm else []:
            if name in REGISTRY and not reason:
                options.append((name, label))
        self.fields["strategy"].choices = options
        self.has_policy = bool(vm and vm.policies.filter(enabled=True).exists())
        if not self.has_policy:
            self.fields["destination"].required = True
            self.fields["destination"].empty_label = None
            self.fields["strategy"].choices = options[1:] or [("image_transfer", STRATEGIES["image_transfer"].label)]


class RestoreForm(forms.Form):
    name = forms.CharField(max_length=255, help_text="A VM with this name must not exist.")
    cluster = forms.ChoiceField(required=False)
    storage_domain = forms.ChoiceField(required=False)
    allocation = forms.ChoiceField(
        choices=[("original", "As the original disks"), ("thin", "Thin"), ("preallocated", "Preallocated")],
        initial="original",
    )
    power_on = forms.BooleanField(required=False, label="Start the VM when restored")
    replace = forms.BooleanField(required=False, label="Replace an existing VM of this name (it must be down)")
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, point=None, **kwargs):
        super().__init__(*args, **kwargs)
        from inventory.models import Cluster, StorageDomain

        manager = point.vm.manager
        self.fields["cluster"].choices = [("", "The VM's original cluster")] + [
            (c.name, c.name) for c in Cluster.objects.filter(manager=manager, missing_since=None)
        ]
        self.fields["storage_domain"].choices = [("", "Each disk's original storage domain")] + [
            (s.name, f"{s.name} ({s.get_storage_kind_display()}, {(s.available_bytes or 0) // 2**30} GiB free)")
            for s in StorageDomain.objects.filter(manager=manager, missing_since=None, type="data")
        ]
