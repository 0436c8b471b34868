from django import forms

from core.formats import iec
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


def data_domain_choices(manager_id: int | None, data_center_id: int | None = None) -> list[tuple[str, str]]:
    """The inventory's data domains a VM's disks can move to: of its data center when known, else of
    its manager; never an instant restore's own temporary domain (instant-N)."""
    domains = StorageDomain.objects.filter(manager=manager_id, missing_since=None, type=StorageDomain.Type.DATA)
    if data_center_id is not None:
        domains = domains.filter(data_center=data_center_id)
    return [(s.name, domain_label(s)) for s in domains.order_by("name") if not is_instant_domain(s.name)]


def domain_label(domain: StorageDomain) -> str:
    free = f", {iec(domain.available_bytes)} free" if domain.available_bytes is not None else ""
    return f"{domain.name} ({domain.get_storage_kind_display()}{free})"


def is_instant_domain(name: str) -> bool:
    return name.startswith("instant-") and name[len("instant-") :].isdigit()


class InstantRestoreForm(forms.Form):
    """Boot a backup point as a VM from the backup itself (recovery.instant)."""

    name = forms.CharField(
        max_length=64, help_text="The VM booted from the backup: letters, digits, '-', '_' or '.'; no VM may have it."
    )
    cluster = forms.ChoiceField(required=False)
    migrate_to = forms.ChoiceField(
        required=False,
        label="Once it is up, move its disks to",
        help_text="Its disks stay on the backup (served by this node over NFS) until they are moved or it is "
        "discarded; you can move them later from its page.",
    )

    def __init__(self, *args, point=None, **kwargs):
        super().__init__(*args, **kwargs)
        vm = point.vm
        own = vm.cluster.name if vm.cluster_id else ""
        self.fields["cluster"].choices = [("", f"The VM's own ({own})" if own else "The VM's own (not known)")] + [
            (c.name, c.name) for c in Cluster.objects.filter(manager=vm.manager_id, missing_since=None)
        ]
        data_center = vm.cluster.data_center_id if vm.cluster_id else None
        self.fields["migrate_to"].choices = [("", "Nowhere yet: keep it running from the backup")] + (
            data_domain_choices(vm.manager_id, data_center)
        )
