"""What the service knows of each registered engine: its managers and their inventory.

Every inventory row is keyed by the engine's UUID within its manager. A row whose entity
disappears from the engine is marked missing instead of deleted, because backup points may
still refer to it.
"""

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from core.crypto import EncryptedTextField
from core.lvm_filter import lvm_filter_problem
from inventory.validators import validate_api_url, validate_engine_username
from ovirt.connection import test_connection


class ManagerQuerySet(models.QuerySet):
    def due_for_sync(self, now=None):
        """Managers whose periodic sync is on and whose last sync is older than their interval."""
        now = now or timezone.now()
        due = [
            m.pk
            for m in self.filter(sync_interval_minutes__gt=0)
            if m.last_sync is None or (now - m.last_sync).total_seconds() >= m.sync_interval_minutes * 60
        ]
        return self.filter(pk__in=due)


class Manager(models.Model):
    """An oVirt/RHV/OLVM engine reached through its REST API."""

    class Status(models.TextChoices):
        UNKNOWN = "unknown", "Not checked yet"
        OK = "ok", "Connected"
        ERROR = "error", "Error"

    name = models.CharField(max_length=100, unique=True)
    api_url = models.URLField(
        "API URL", max_length=300, validators=[validate_api_url], help_text="https://ENGINE/ovirt-engine/api"
    )
    username = models.CharField(max_length=150, validators=[validate_engine_username], help_text="user@domain")
    password = EncryptedTextField(blank=True)
    ca_certificate = models.TextField("CA certificate (PEM)", blank=True)
    verify_tls = models.BooleanField("verify TLS", default=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNKNOWN)
    engine_version = models.CharField(max_length=40, blank=True)
    last_sync = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    sync_interval_minutes = models.PositiveIntegerField(
        "sync every (minutes)", default=15, help_text="0 turns periodic sync off."
    )
    created = models.DateTimeField(default=timezone.now)

    objects = ManagerQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def record_connection_test(self, report) -> None:
        """Keep what a connection test found; a saved manager is updated in place."""
        self.status = self.Status.OK if report.ok else self.Status.ERROR
        self.last_error = report.error
        self.engine_version = report.version or self.engine_version
        if self.pk:
            Manager.objects.filter(pk=self.pk).update(
                status=self.status, last_error=self.last_error, engine_version=self.engine_version
            )

    def check_connection(self):
        """Test the connection and record the outcome; returns the report (ovirt.connection)."""
        report = test_connection(self)
        self.record_connection_test(report)
        return report

    @property
    def api_version(self) -> tuple[int, int] | None:
        parts = self.engine_version.split(".")
        try:
            return int(parts[0]), int(parts[1])
        except (IndexError, ValueError):
            return None


class EngineEntity(models.Model):
    """Fields every inventory row shares: the manager it came from and the engine's UUID."""

    manager = models.ForeignKey(Manager, on_delete=models.CASCADE)
    engine_id = models.UUIDField("engine id")
    name = models.CharField(max_length=255)
    missing_since = models.DateTimeField(
        null=True, blank=True, help_text="Set when the last sync no longer found it on the engine."
    )
    synced = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True
        ordering = ["name"]
        constraints = []

    def __str__(self) -> str:
        return self.name

    @property
    def missing(self) -> bool:
        return self.missing_since is not None


def _unique_per_manager(model_name: str) -> list:
    return [models.UniqueConstraint(fields=["manager", "engine_id"], name=f"{model_name}_unique_engine_id")]


class DataCenter(EngineEntity):
    """An engine data center (a storage pool)."""

    class Meta(EngineEntity.Meta):
        constraints = _unique_per_manager("datacenter")


class Cluster(EngineEntity):
    """A cluster of hosts within a data center."""

    data_center = models.ForeignKey(DataCenter, null=True, blank=True, on_delete=models.SET_NULL)
    cpu_type = models.CharField(max_length=100, blank=True)

    class Meta(EngineEntity.Meta):
        constraints = _unique_per_manager("cluster")


class Host(EngineEntity):
    """A hypervisor host. SSH credentials are used by the SSH transfer strategy."""

    class Status(models.TextChoices):
        UP = "up", "Up"
        MAINTENANCE = "maintenance", "Maintenance"
        NON_OPERATIONAL = "non_operational", "Non operational"
        DOWN = "down", "Down"
        UNKNOWN = "unknown", "Unknown"

    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.SET_NULL)
    address = models.CharField(max_length=255)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UNKNOWN)
    ssh_port = models.PositiveIntegerField("SSH port", default=22)
    ssh_user = models.CharField("SSH user", max_length=100, default="root")
    ssh_private_key = EncryptedTextField("SSH private key", blank=True)
    ssh_password = EncryptedTextField("SSH password", blank=True)
    ssh_host_key = models.TextField(
        "SSH host key", blank=True, help_text="Learnt at the first login and required from then on."
    )
    # What the engine reports of the host's packages (major.minor.build.revision); empty when it does not.
    vdsm_version = models.CharField("vdsm version", max_length=40, blank=True)
    libvirt_version = models.CharField("libvirt version", max_length=40, blank=True)

    class Meta(EngineEntity.Meta):
        constraints = _unique_per_manager("host")

    def versions(self) -> dict[str, tuple[int, ...]]:
        """{"vdsm": (4, 50, 5, 1), "libvirt": (9, 0, 0, 0)}, for what the engine reported."""
        found = {}
        for component, text in (("vdsm", self.vdsm_version), ("libvirt", self.libvirt_version)):
            if text:
                found[component] = tuple(int(n) for n in text.split("."))
        return found


class StorageDomain(EngineEntity):
    """A storage domain: data (VM disks), export (legacy exports) or ISO."""

    class Type(models.TextChoices):
        DATA = "data", "Data"
        EXPORT = "export", "Export"
        ISO = "iso", "ISO"

    class Kind(models.TextChoices):
        NFS = "nfs", "NFS"
        ISCSI = "iscsi", "iSCSI"
        FCP = "fcp", "Fibre Channel"
        GLUSTERFS = "glusterfs", "GlusterFS"
        POSIXFS = "posixfs", "POSIX FS"
        LOCALFS = "localfs", "Local FS"

    data_center = models.ForeignKey(DataCenter, null=True, blank=True, on_delete=models.SET_NULL)
    type = models.CharField(max_length=10, choices=Type.choices, default=Type.DATA)
    storage_kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.NFS)
    path = models.CharField(max_length=500, blank=True, help_text="Export path, or the LUN/VG for block storage.")
    available_bytes = models.BigIntegerField(null=True, blank=True)
    used_bytes = models.BigIntegerField(null=True, blank=True)

    class Meta(EngineEntity.Meta):
        constraints = _unique_per_manager("storagedomain")

    @property
    def is_block(self) -> bool:
        return self.storage_kind in (self.Kind.ISCSI, self.Kind.FCP)


class Tag(EngineEntity):
    """An engine tag, used by policy auto-assignment rules."""

    class Meta(EngineEntity.Meta):
        constraints = _unique_per_manager("tag")


class VM(EngineEntity):
    """A virtual machine as the engine last reported it."""

    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.SET_NULL)
    host = models.ForeignKey(Host, null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=30, blank=True)
    guest_agent = models.BooleanField("guest agent present", default=False)
    fqdn = models.CharField("FQDN", max_length=255, blank=True, help_text="As the guest agent reports it.")
    guest_address = models.CharField(
        max_length=255, blank=True, help_text="Where to reach the guest over SSH; its FQDN when empty."
    )
    guest_host_key = models.TextField(
        "guest SSH host key", blank=True, help_text="Learnt at the first login and required from then on."
    )
    os_type = models.CharField("OS", max_length=100, blank=True)
    memory_bytes = models.BigIntegerField(null=True, blank=True)
    cpu_cores = models.PositiveIntegerField(null=True, blank=True)
    virtio_scsi = models.BooleanField(
        "VirtIO-SCSI enabled",
        null=True,
        blank=True,
        help_text="Whether it has a VirtIO-SCSI controller (unknown: null).",
    )
    tags = models.ManyToManyField(Tag, blank=True, related_name="vms")

    class Meta(EngineEntity.Meta):
        verbose_name = "VM"
        constraints = _unique_per_manager("vm")

    @property
    def guest_agent_text(self) -> str:
        """The engine hears the agent only while the VM runs; a down VM's answer is its last one."""
        if self.status == "up":
            return "yes" if self.guest_agent else "no"
        return "yes, when last running" if self.guest_agent else "unknown while the VM is not running"

    @property
    def ssh_address(self) -> str:
        return self.guest_address or self.fqdn


class Disk(EngineEntity):
    """A disk image; `vm` is the VM it is attached to (None for a floating disk)."""

    class Format(models.TextChoices):
        RAW = "raw", "RAW"
        COW = "cow", "QCOW2 (cow)"

    class Interface(models.TextChoices):
        VIRTIO = "virtio", "VirtIO"
        VIRTIO_SCSI = "virtio_scsi", "VirtIO-SCSI"
        IDE = "ide", "IDE"
        SATA = "sata", "SATA"

    vm = models.ForeignKey(VM, null=True, blank=True, on_delete=models.SET_NULL, related_name="disks")
    storage_domain = models.ForeignKey(StorageDomain, null=True, blank=True, on_delete=models.SET_NULL)
    provisioned_size = models.BigIntegerField(default=0)
    actual_size = models.BigIntegerField(default=0)
    format = models.CharField(max_length=4, choices=Format.choices, default=Format.COW)
    sparse = models.BooleanField(default=True)
    interface = models.CharField(max_length=12, choices=Interface.choices, default=Interface.VIRTIO_SCSI)
    bootable = models.BooleanField(default=False)
    active = models.BooleanField(default=True)
    incremental_backup = models.BooleanField("incremental backup enabled", default=False)
    status = models.CharField(max_length=20, blank=True)

    class Meta(EngineEntity.Meta):
        constraints = _unique_per_manager("disk")

    @property
    def alias(self) -> str:
        return self.name

    def incremental_blocker(self) -> str:
        """Why this disk cannot be backed up with change block tracking, or "" when it can."""
        version = self.manager.api_version
        if version is not None and version < (4, 4):
            return f"The engine's API {version[0]}.{version[1]} is older than 4.4, which added incremental backup."
        if self.format == self.Format.RAW:
            return "RAW disks cannot track changes; only QCOW2 disks with incremental backup enabled can."
        if not self.incremental_backup:
            return "Incremental backup is not enabled on this disk (engine: Edit Disk > Enable Incremental Backup)."
        return ""


class ProxyVM(models.Model):
    """A VM of a cluster with one of our nodes running inside it: disk attachment backups of that
    cluster's VMs attach their disk snapshots to it, and its node reads them as local block devices.
    An admin marks it (the node that runs inside it offers it, having recognised its own VM)."""

    class Interface(models.TextChoices):
        VIRTIO_SCSI = "virtio_scsi", "VirtIO-SCSI"
        VIRTIO = "virtio", "VirtIO"

    vm = models.OneToOneField(VM, on_delete=models.CASCADE, related_name="proxy")
    node = models.ForeignKey(
        "jobs.Node", to_field="name", on_delete=models.PROTECT, related_name="proxies", help_text="The node inside it."
    )
    device_dir = models.CharField(
        "device directory",
        max_length=300,
        default="/dev/disk/by-id",
        help_text="Where the node finds the attached disks by their serial (the guest's /dev/disk/by-id).",
    )
    interface = models.CharField(
        max_length=12,
        choices=Interface.choices,
        default=Interface.VIRTIO_SCSI,
        help_text="How disks are attached to it: VirtIO-SCSI needs a VirtIO-SCSI controller on the proxy VM.",
    )
    max_attached = models.PositiveIntegerField(
        "most attached disks",
        default=8,
        help_text="Disks attached to it at once, over every backup it runs (VirtIO allows few per VM).",
    )
    enabled = models.BooleanField(default=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["vm__name"]
        verbose_name = "proxy VM"

    def __str__(self) -> str:
        return self.vm.name

    def lvm_filter_problem(self) -> str:
        """What its node's LVM filter lets through of the disks attached to it, with the fix ("" when it
        hides them), as the node read it when it joined."""
        return lvm_filter_problem(self.node.lvm_config, self.interface)

    def clean(self) -> None:
        """What makes a VM usable as a proxy of its node; each error names the fix."""
        errors = {}
        vm, node = self.vm, self.node
        if vm.missing_since is not None:
            errors["vm"] = f"VM {vm.name} is no longer on its engine (missing since the last sync)."
        elif vm.cluster is None:
            errors["vm"] = f"VM {vm.name} has no cluster: a proxy serves the VMs of its cluster."
        elif not node.serves_cluster(vm.cluster.name):
            errors["node"] = (
                f"Node {node.name} serves clusters {', '.join(node.clusters)}, not {vm.cluster.name}, the cluster of "
                f"VM {vm.name}: add it to the node's NODE_CLUSTERS."
            )
        if "node" not in errors and node.vm_id and node.vm_id != str(vm.engine_id):
            errors["node"] = (
                f"Node {node.name} runs inside another VM ({node.vm_id}), not in {vm.name} ({vm.engine_id}): "
                "disks attached to this VM would not appear on it."
            )
        path = self.device_dir
        if not path.startswith("/") or "\0" in path or ".." in path.split("/"):
            errors["device_dir"] = f"The device directory {path!r} must be an absolute path without '..'."
        if self.interface == self.Interface.VIRTIO_SCSI and vm.virtio_scsi is False:
            errors["interface"] = (
                f"VM {vm.name} has VirtIO-SCSI disabled: enable it (engine: Edit VM > Resource Allocation > "
                "VirtIO-SCSI Enabled) or attach with interface virtio."
            )
        if not 1 <= self.max_attached <= 64:
            errors["max_attached"] = "Between 1 and 64 disks attached at once."
        if errors:
            raise ValidationError(errors)


class StagingShare(models.Model):
    """A data center's directory of a node's staging share, served over NFS by that node: the data
    center's export domain is created on it, so the export storage domain strategy's backups (and
    restores into the export domain) of its VMs run on that node. Recorded by `manage.py staging_share`
    on the node."""

    data_center = models.OneToOneField(DataCenter, on_delete=models.CASCADE, related_name="staging_share")
    node = models.ForeignKey(
        "jobs.Node",
        to_field="name",
        on_delete=models.PROTECT,
        related_name="staging_shares",
        help_text="The node serving it.",
    )
    directory = models.CharField(max_length=500, help_text="The directory on the node.")
    share = models.CharField(max_length=500, help_text="ADDRESS:PATH, as the engine's NFS storage connection names it.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["data_center__name"]

    def __str__(self) -> str:
        return f"{self.data_center.name}: {self.share}"
