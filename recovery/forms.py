from django import forms

from inventory.models import Cluster, StorageDomain


class RestoreForm(forms.Form):
    name = forms.CharField(max_length=255, help_text="A VM with this name must not exist.")
    cluster = forms.ChoiceField(required=False)
    storage_domain = forms.ChoiceField(required=False)
    allocation = forms.ChoiceField(
        choices=[("original", "As the original disks"), ("thin", "Thin"), ("preallocated", "Preallocated")],
        initial="original",
    )
    transfer = forms.ChoiceField(
        label="Write the disks",
        choices=[
            ("auto", "As suits the backup (see above)"),
            ("imageio", "Through the engine's image transfers (imageio)"),
            ("ssh", "Over SSH into the new volumes on a host"),
            ("proxy", "Through a proxy VM of the cluster (attached, written there, detached)"),
        ],
        initial="auto",
        required=False,
    )
    power_on = forms.BooleanField(required=False, label="Start the VM when restored")
    replace = forms.BooleanField(required=False, label="Replace an existing VM of this name (it must be down)")
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, point=None, **kwargs):
        super().__init__(*args, **kwargs)
        manager = point.vm.manager
        self.fields["cluster"].choices = [("", "The VM's original cluster")] + [
            (c.name, c.name) for c in Cluster.objects.filter(manager=manager, missing_since=None)
        ]
        self.fields["storage_domain"].choices = [("", "Each disk's original storage domain")] + [
            (s.name, f"{s.name} ({s.get_storage_kind_display()}, {(s.available_bytes or 0) // 2**30} GiB free)")
            for s in StorageDomain.objects.filter(manager=manager, missing_since=None, type="data")
        ]
