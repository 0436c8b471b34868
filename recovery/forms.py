from django import forms

from core.formats import iec
from inventory.models import VM, Cluster, StorageDomain
from ovirt.errors import EngineError
from ovirt.vms import VM_NAME_MAX, VM_NAME_RULE, validate_vm_name, vm_name_problem
from recovery.restore import NameTaken, check_new_vm_name
from recovery.ssh_restore import restore_transfer


class RestoreForm(forms.Form):
    """The restore wizard: the whole VM (a new VM from the saved OVF) or chosen disks (floating, or
    attached to a VM of the engine), where to (cluster, storage domain with its free space), and how
    the disks are written (the path and its reason, as recovery.ssh_restore.restore_transfer decides).

    A new VM's name is checked against the engine before anything is queued: a name taken is refused
    in words unless Replace is ticked (and then the VM must be down)."""

    what = forms.ChoiceField(
        label="Restore",
        widget=forms.RadioSelect,
        choices=[
            ("vm", "The whole VM: a new VM from the backup's saved configuration (OVF), with every disk"),
            ("disks", "Chosen disks only: new disks, floating or attached to a VM you choose"),
        ],
        initial="vm",
    )
    name = forms.CharField(
        label="Name of the new VM",
        required=False,
        # Checked in clean() for a whole-VM restore only: a disks restore names no VM.
        widget=forms.TextInput(attrs={"maxlength": VM_NAME_MAX}),
        help_text=f"{VM_NAME_RULE[0].upper()}{VM_NAME_RULE[1:]}. Checked against the engine before the restore "
        "is queued: no VM may have it, unless you tick Replace below.",
    )
    replace = forms.BooleanField(
        required=False,
        label="Replace the VM of this name if there is one (it must be down): it is removed once the restored "
        "VM exists, and keeps its name if the restore fails",
    )
    power_on = forms.BooleanField(required=False, label="Start the VM when restored")
    cluster = forms.ChoiceField(required=False, label="Cluster")
    disks = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Disks to restore", help_text=""
    )
    disk_target = forms.ChoiceField(
        label="Put the restored disks",
        widget=forms.RadioSelect,
        choices=[("floating", "Floating: attached to no VM"), ("attach", "Attached to an existing VM")],
        initial="floating",
        required=False,
    )
    attach_to = forms.ChoiceField(required=False, label="VM to attach them to")
    storage_domain = forms.ChoiceField(required=False, label="Storage domain")
    allocation = forms.ChoiceField(
        choices=[("original", "As the original disks"), ("thin", "Thin"), ("preallocated", "Preallocated")],
        initial="original",
    )
    transfer = forms.ChoiceField(label="Write the disks", initial="auto", required=False)
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput)

    # Sections of the page, in order: the fields of each (the template lays them out).
    SECTIONS = [
        ("what", "What to restore", ["what"]),
        ("vm-only", "The new VM", ["name", "replace", "power_on", "cluster"]),
        ("disks-only", "The disks", ["disks", "disk_target", "attach_to"]),
        ("storage", "Storage and path", ["storage_domain", "allocation", "transfer"]),
    ]

    def __init__(self, *args, point, **kwargs):
        super().__init__(*args, **kwargs)
        self.point = point
        vm = point.vm
        own = vm.cluster.name if vm.cluster_id else "as its saved configuration says"
        self.fields["cluster"].choices = [("", f"The VM's original cluster ({own})")] + [
            (c.name, f"{c.name} (data center {c.data_center.name})" if c.data_center_id else c.name)
            for c in Cluster.objects.filter(manager=vm.manager_id, missing_since=None).select_related("data_center")
        ]
        self.fields["storage_domain"].choices = [("", "Each disk's original storage domain")] + data_domain_choices(
            vm.manager_id
        )
        self.entries = list(point.disks.select_related("disk").order_by("disk__name"))
        self.fields["disks"].choices = [
            (str(d.disk.engine_id), f"{d.disk.name} ({iec(d.virtual_size)})") for d in self.entries
        ]
        self.fields["attach_to"].choices = [("", "Choose a VM")] + [
            (v.name, v.name)
            for v in VM.objects.filter(manager=vm.manager_id, missing_since=None).order_by("name").only("name")
        ]
        # The path "auto" takes, and why: the one rule recovery.ssh_restore keeps, not a copy of it.
        self.auto_path, self.auto_why = restore_transfer(point)
        self.fields["transfer"].choices = [
            ("auto", f"Automatic: {self.auto_why}"),
            ("imageio", "Through the engine's image transfers (imageio)"),
            ("ssh", "Over SSH into the new volumes on a host"),
            ("proxy", "Through a proxy VM of the cluster (attached, written there, detached)"),
        ]
        self.existing = None  # the engine's VM a whole-VM restore replaces, once checked
        self.path = self.why = ""
        self.notes: list[str] = []

    @classmethod
    def initial_from(cls, data) -> dict:
        """The form's values as submitted (a QueryDict), as initial values to change them."""
        initial = {}
        for name, field in cls.base_fields.items():
            if name == "confirm":
                continue
            if isinstance(field, forms.MultipleChoiceField):
                initial[name] = data.getlist(name)
            elif isinstance(field, forms.BooleanField):
                initial[name] = data.get(name) == "True"
            elif name in data:
                initial[name] = data.get(name)
        return initial

    def clean(self):
        data = super().clean()
        what = data.get("what")
        if what == "disks":
            if not data.get("disks"):
                self.add_error("disks", "Choose at least one disk to restore.")
            if data.get("disk_target") == "attach" and not data.get("attach_to"):
                self.add_error("attach_to", "Choose the VM the restored disks are attached to.")
        elif what == "vm":
            name = (data.get("name") or "").strip()
            data["name"] = name
            if not name:
                self.add_error("name", "Name the restored VM.")
            elif problem := vm_name_problem(name):
                self.add_error("name", problem)
            elif not self.errors:
                self._check_name(name, replace=bool(data.get("replace")))
        if what and "transfer" not in self.errors:
            try:
                self.path, self.why = restore_transfer(
                    self.point, data.get("transfer") or "auto", cluster=data.get("cluster") or ""
                )
            except ValueError as e:
                self.add_error("transfer", str(e))
        self._note_space(data)
        return data

    def _check_name(self, name: str, *, replace: bool) -> None:
        """The name against the engine, now (recovery.restore.check_new_vm_name, as the API asks it)."""
        try:
            self.existing = check_new_vm_name(
                self.point.vm.manager, name, replace=replace, how_to_replace="tick Replace"
            )
        except NameTaken as e:
            self.add_error("name", str(e))
        except EngineError as e:
            self.add_error(None, str(e))

    def _note_space(self, data) -> None:
        """Whether the chosen storage domain has room for the disks' virtual size (thin disks take less)."""
        chosen = set(data.get("disks") or []) if data.get("what") == "disks" else None
        size = sum(d.virtual_size for d in self.entries if chosen is None or str(d.disk.engine_id) in chosen)
        domain = StorageDomain.objects.filter(
            manager=self.point.vm.manager_id, name=data.get("storage_domain") or "", missing_since=None
        ).first()
        if domain is not None and domain.available_bytes is not None and domain.available_bytes < size:
            self.notes.append(
                f"Storage domain {domain.name} has {iec(domain.available_bytes)} free; the disks are "
                f"{iec(size)} in all (their virtual size: thin disks take what they hold)."
            )

    def chosen_entries(self) -> list:
        if self.cleaned_data.get("what") != "disks":
            return self.entries
        chosen = set(self.cleaned_data["disks"])
        return [d for d in self.entries if str(d.disk.engine_id) in chosen]

    def restore_arguments(self) -> dict:
        """The keyword arguments of recovery.restore.request_restore this form asks for."""
        data = self.cleaned_data
        arguments = {
            "cluster": data["cluster"],
            "storage_domain": data["storage_domain"],
            "allocation": data["allocation"],
            "transfer": data["transfer"] or "auto",
        }
        if data["what"] == "disks":
            attach = data["disk_target"] == "attach"
            return {
                **arguments,
                "disks": list(data["disks"]),
                "attach_to": data["attach_to"] if attach else "",
                "floating": not attach,
            }
        return {**arguments, "name": data["name"], "power_on": data["power_on"], "replace": data["replace"]}


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
        validators=[validate_vm_name],
        widget=forms.TextInput(attrs={"maxlength": VM_NAME_MAX}),
        help_text=f"The VM booted from the backup: {VM_NAME_RULE}; no VM may have it.",
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
        self.point = point
        vm = point.vm
        own = vm.cluster.name if vm.cluster_id else ""
        self.fields["cluster"].choices = [("", f"The VM's own ({own})" if own else "The VM's own (not known)")] + [
            (c.name, c.name) for c in Cluster.objects.filter(manager=vm.manager_id, missing_since=None)
        ]
        data_center = vm.cluster.data_center_id if vm.cluster_id else None
        self.fields["migrate_to"].choices = [("", "Nowhere yet: keep it running from the backup")] + (
            data_domain_choices(vm.manager_id, data_center)
        )

    def clean_name(self) -> str:
        """A name the engine takes (its validator) and that no VM has: checked now, as the restore
        wizard checks it, not by the boot job once it has served the backup and made a storage domain."""
        name = self.cleaned_data["name"]
        try:
            check_new_vm_name(self.point.vm.manager, name)
        except NameTaken as e:
            raise forms.ValidationError(str(e)) from None
        except EngineError as e:
            self.add_error(None, str(e))
        return name
