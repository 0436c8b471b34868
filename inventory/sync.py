"""Inventory sync: read everything an engine has in a fixed number of API calls and upsert it.

Rows are keyed by (manager, engine id). Whatever the engine no longer reports is marked
missing, never deleted, since backup points may refer to it.
"""

import time

import ovirtsdk4 as sdk
from django.db import models, transaction
from django.utils import timezone

from inventory.models import VM, Cluster, DataCenter, Disk, Host, Manager, StorageDomain, Tag
from jobs.errors import JobError
from jobs.models import Job
from jobs.runner import enqueue
from ovirt.connection import connect, dotted, host_versions
from ovirt.errors import fault_text

# The kind of job this app registers (jobs.kinds): a sync of one manager's inventory.
SYNC = "sync"
SD_KINDS = {k.value for k in StorageDomain.Kind}
INTERFACES = {k.value for k in Disk.Interface}


def request_sync(manager: Manager, *, origin: str, owner=None) -> Job:
    """Queue a sync of this manager, or return the one already queued or running."""
    job, created = Job.objects.create_unless_active(
        exclusive=f"sync:manager:{manager.pk}",
        kind=SYNC,
        manager=manager,
        name=manager.name,
        owner=owner,
        origin=origin,
    )
    if created or job.status == Job.Status.QUEUED:
        # A queued job's task may have been lost with a worker; a duplicate task is harmless, the
        # claim is atomic.
        enqueue(job)
    return job


def _value(enum) -> str:
    return enum.value if enum is not None else ""


class Upserter:
    """Creates or updates rows of one model for one manager, and marks the rest missing.

    Writes only what changed, in batches (`flush`): a sync that finds the engine as it was writes
    nothing, and one that finds 5,000 new VMs writes them in a few INSERTs, not 5,000.
    """

    BATCH = 500

    def __init__(self, model, manager: Manager, now):
        self.model = model
        self.manager = manager
        self.now = now
        self.existing = {str(row.engine_id): row for row in model.objects.filter(manager=manager)}
        self.relations = {f.name for f in model._meta.fields if f.is_relation}
        self.seen: dict[str, object] = {}
        self.new: list = []
        self.changed: dict[int, object] = {}
        self.changed_fields: set[str] = set()

    def put(self, engine_id: str, **fields):
        """The row for this engine id, with these values (written at `flush`)."""
        row = self.existing.get(engine_id)
        # Compare related rows by id: reading row.cluster would cost a query per row.
        fields = {
            (f"{k}_id" if isinstance(v, models.Model) or (v is None and k in self.relations) else k): (
                v.pk if isinstance(v, models.Model) else v
            )
            for k, v in fields.items()
        }
        fields["missing_since"] = None
        if row is None:
            row = self.model(manager=self.manager, engine_id=engine_id, synced=self.now, **fields)
            self.new.append(row)
        else:
            changed = [name for name, value in fields.items() if getattr(row, name) != value]
            for name in changed:
                setattr(row, name, fields[name])
            if changed:
                # `synced` says when a sync last found the row changed (or new), so an unchanged
                # row is not rewritten for it.
                row.synced = self.now
                self.changed[row.pk] = row
                self.changed_fields.update(changed)
        self.seen[engine_id] = row
        return row

    def flush(self) -> None:
        """Write the new rows (their ids set, for the rows that refer to them) and the changed ones."""
        if self.new:
            self.model.objects.bulk_create(self.new, batch_size=self.BATCH)
            self.new = []
        if self.changed:
            self.model.objects.bulk_update(
                list(self.changed.values()), sorted(self.changed_fields | {"synced"}), batch_size=self.BATCH
            )
            self.changed, self.changed_fields = {}, set()

    def finish(self) -> int:
        gone = [row.pk for eid, row in self.existing.items() if eid not in self.seen and row.missing_since is None]
        if gone:
            self.model.objects.filter(pk__in=gone).update(missing_since=self.now)
        return len(gone)


def sync_manager(manager: Manager, *, job: Job | None = None) -> dict:
    """Read the engine's inventory (eight API calls whatever its size) and store it."""
    started = time.monotonic()
    try:
        with connect(manager) as connection:
            system = connection.system_service()
            api = system.get()
            data_centers = system.data_centers_service().list()
            clusters = system.clusters_service().list()
            hosts = system.hosts_service().list()
            domains = system.storage_domains_service().list()
            tags = system.tags_service().list()
            vms = system.vms_service().list(follow="disk_attachments,tags")
            disks = system.disks_service().list()
    except sdk.Error as e:
        report = manager.check_connection()
        # The test's steps up to reading the inventory explain a failed read; permits the user's
        # roles lack for backups do not.
        failed = next((step for step in report.steps if not step.ok), None)
        why = failed.message if failed is not None and failed.name != "permits" else fault_text(e)
        raise JobError(f"Cannot read the inventory of {manager.name}: {why}") from None
    fetched = time.monotonic()
    if job:
        job.log(
            "info",
            f"Read {len(vms)} VMs, {len(disks)} disks, {len(hosts)} hosts, {len(domains)} storage "
            f"domains in {fetched - started:.1f}s",
        )
    now = timezone.now()
    with transaction.atomic():
        counts, missing = {}, {}
        dcs = Upserter(DataCenter, manager, now)
        for dc in data_centers:
            dcs.put(dc.id, name=dc.name)
        dcs.flush()
        cls = Upserter(Cluster, manager, now)
        for c in clusters:
            cls.put(
                c.id,
                name=c.name,
                data_center=dcs.seen.get(c.data_center.id) if c.data_center else None,
                cpu_type=(c.cpu.type or "") if c.cpu else "",
            )
        cls.flush()
        hs = Upserter(Host, manager, now)
        for h in hosts:
            # The engine's SSH port for a new host; an admin's own setting is kept from then on.
            port = {"ssh_port": h.ssh.port} if h.id not in hs.existing and h.ssh and h.ssh.port else {}
            versions = host_versions(h)
            hs.put(
                h.id,
                name=h.name,
                address=h.address or "",
                status=_value(h.status) or "unknown",
                cluster=cls.seen.get(h.cluster.id) if h.cluster else None,
                vdsm_version=dotted(versions["vdsm"]) if "vdsm" in versions else "",
                libvirt_version=dotted(versions["libvirt"]) if "libvirt" in versions else "",
                **port,
            )
        hs.flush()
        sds = Upserter(StorageDomain, manager, now)
        for sd in domains:
            storage = sd.storage
            kind = _value(storage.type) if storage else ""
            path = ""
            if storage:
                path = storage.path or (storage.volume_group.id if storage.volume_group else "") or ""
                if storage.address and storage.path:
                    path = f"{storage.address}:{storage.path}"
            dc = sd.data_centers[0] if sd.data_centers else None
            sds.put(
                sd.id,
                name=sd.name,
                type=_value(sd.type) or "data",
                storage_kind=kind if kind in SD_KINDS else StorageDomain.Kind.NFS,
                path=path,
                available_bytes=sd.available,
                used_bytes=sd.used,
                data_center=dcs.seen.get(dc.id) if dc and dc.id else None,
            )
        sds.flush()
        ts = Upserter(Tag, manager, now)
        for t in tags:
            ts.put(t.id, name=t.name)
        ts.flush()
        vs = Upserter(VM, manager, now)
        attachments = {}
        vm_tags = {}
        for v in vms:
            running = v.status is not None and v.status.value == "up"
            fields = {
                "name": v.name,
                "status": _value(v.status),
                "cluster": cls.seen.get(v.cluster.id) if v.cluster else None,
                "host": hs.seen.get(v.host.id) if v.host else None,
                "os_type": (v.os.type or "") if v.os else "",
                "memory_bytes": v.memory,
                "cpu_cores": _cores(v),
                "virtio_scsi": v.virtio_scsi.enabled if v.virtio_scsi is not None else None,
            }
            if running:
                # The engine reports guest OS details only while the agent answers.
                fields["guest_agent"] = v.guest_operating_system is not None
                fields["fqdn"] = v.fqdn or ""
            row = vs.put(v.id, **fields)
            for a in v.disk_attachments or []:
                attachments[a.disk.id] = (row, a)
            vm_tags[v.id] = {t.id for t in v.tags or []}
        vs.flush()
        _sync_vm_tags(
            manager, {vs.seen[v].pk: {ts.seen[t].pk for t in ids if t in ts.seen} for v, ids in vm_tags.items()}
        )
        ds = Upserter(Disk, manager, now)
        for d in disks:
            vm_row, attachment = attachments.get(d.id, (None, None))
            sd = d.storage_domains[0].id if d.storage_domains else None
            ds.put(
                d.id,
                name=d.alias or d.name or d.id,
                vm=vm_row,
                storage_domain=sds.seen.get(sd),
                provisioned_size=d.provisioned_size or 0,
                actual_size=d.actual_size or 0,
                format=_value(d.format) or "cow",
                sparse=bool(d.sparse),
                interface=_interface(attachment),
                bootable=bool(attachment.bootable) if attachment else False,
                active=bool(attachment.active) if attachment else False,
                incremental_backup=_value(d.backup) == "incremental",
                status=_value(d.status),
            )
        ds.flush()
        for name, upserter in (
            ("data_centers", dcs),
            ("clusters", cls),
            ("hosts", hs),
            ("storage_domains", sds),
            ("tags", ts),
            ("vms", vs),
            ("disks", ds),
        ):
            counts[name] = len(upserter.seen)
            missing[name] = upserter.finish()
        version = api.product_info.version if api.product_info else None
        Manager.objects.filter(pk=manager.pk).update(
            status=Manager.Status.OK,
            last_error="",
            last_sync=now,
            engine_version=(version.full_version or f"{version.major}.{version.minor}") if version else "",
        )
    result = {
        "counts": counts,
        "missing": missing,
        "api_calls": 8,
        "duration_seconds": round(time.monotonic() - started, 2),
    }
    if job:
        job.log(
            "info",
            "Stored "
            + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items())
            + f" in {result['duration_seconds']}s",
        )
        newly_missing = {k: n for k, n in missing.items() if n}
        if newly_missing:
            job.log(
                "warning",
                "No longer on the engine (marked missing): "
                + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in newly_missing.items()),
            )
    return result


def _sync_vm_tags(manager: Manager, wanted: dict[int, set[int]]) -> None:
    """Make the VM-tag links match the engine's in a few queries, not one per VM."""
    through = VM.tags.through
    current = {
        (v, t): pk for pk, v, t in through.objects.filter(vm__manager=manager).values_list("pk", "vm_id", "tag_id")
    }
    target = {(vm_id, tag_id) for vm_id, tags in wanted.items() for tag_id in tags}
    stale = [pk for link, pk in current.items() if link not in target]
    for start in range(0, len(stale), 500):
        through.objects.filter(pk__in=stale[start : start + 500]).delete()
    added = target - current.keys()
    if added:
        through.objects.bulk_create([through(vm_id=v, tag_id=t) for v, t in added], batch_size=500)


def _cores(vm) -> int | None:
    topology = vm.cpu.topology if vm.cpu else None
    if not topology:
        return None
    return (topology.sockets or 1) * (topology.cores or 1) * (topology.threads or 1)


def _interface(attachment) -> str:
    value = _value(attachment.interface) if attachment else ""
    return value if value in INTERFACES else Disk.Interface.VIRTIO_SCSI


def run_sync(*, job: Job) -> dict:
    if job.manager is None:
        raise JobError("This sync job names no manager (it was removed).")
    return sync_manager(job.manager, job=job)
