"""Instant restore's life: boot a point from the backup, migrate its disks to production storage,
discard it, prove a point boots. Each is a job on the node that serves the temporary domain; the
record (InstantRestore) holds the state between them, and its claim keeps the point's chain.

Boot: the temporary domain laid out beside the point (layout.py), exported over NFS by the node
(jobs.nfs), imported by the engine, attached to the cluster's data center and activated, the VM
registered from the domain's OVF store under the new name, started, and waited for until up. Every
step made on the engine is recorded as it is made and undone by the cleanup stack (or the reaper,
for a dead worker) when a later one fails; the export and the directory go with them."""

import time
from datetime import timedelta
from pathlib import Path

import ovirtsdk4.types as types
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.cleanup import Cleanup
from core.errors import Cancelled
from inventory.models import Cluster, Host
from jobs.errors import JobError
from jobs.models import Job
from jobs.nfs import NfsError, node_exporter
from jobs.placement import Placement
from jobs.runner import enqueue
from ovirt.connection import connect
from ovirt.domains import (
    attach_domain,
    import_nfs_domain,
    move_disk,
    register_vm,
    remove_imported_domain,
    stop_and_remove_vm,
)
from ovirt.errors import fault_text
from ovirt.polling import wait_for
from ovirt.vms import VM_NAME_MAX, vm_name_problem, vm_service
from recovery.instant.errors import InstantError
from recovery.instant.layout import instant_root, lay_out, remove_layout
from recovery.models import InstantRestore
from repository.claims import PointBusy, chain_of, hold_points, release_hold
from repository.models import BackupPoint
from repository.verify import chain_files, files_problem

BOOT, MIGRATE, DISCARD, PROVE = "instant_restore", "instant_migrate", "instant_discard", "restore_proof"
KIND_LABELS = {
    BOOT: "Instant restore",
    MIGRATE: "Instant restore migration",
    DISCARD: "Instant restore discard",
    PROVE: "Restore proof",
}
# The hold on the point's chain is moved on by the serving node's heartbeat; a node gone for good
# lets it lapse after this long (the point may then be pruned under a VM nobody can reach anyway).
HOLD_FOR = timedelta(days=1)
UP_TIMEOUT = 600


# ----- requests -------------------------------------------------------------------------------


def proof_name(point: BackupPoint) -> str:
    """The name of the VM a restore proof of the point boots."""
    return f"proof-{point.vm.name}-{point.pk}"[:VM_NAME_MAX]


def request_instant_restore(
    *,
    point: BackupPoint,
    name: str,
    origin: str,
    cluster: str = "",
    migrate_to: str = "",
    owner=None,
    who: str = "",
    purpose: str = InstantRestore.Purpose.RESTORE,
    started_by=None,
) -> tuple[InstantRestore, Job]:
    """Check what can be checked here, record the instant restore, pin the point's chain and queue
    its boot (or, for a proof, the whole proof; `started_by` the policy that asked). Raises
    InstantError in words."""
    name = name.strip()
    if not name:
        raise InstantError("Name the VM to boot from the backup.")
    problem = vm_name_problem(name)
    if problem:
        raise InstantError(problem)
    if point.status != BackupPoint.Status.COMPLETE:
        raise InstantError(f"Backup {point.pk} is {point.get_status_display().lower()}: only a complete backup boots.")
    # The node that holds the point serves it: a destination's own node, else (shared) the asking one.
    node = point.destination.node_id or settings.NODE_NAME
    if node == settings.NODE_NAME and settings.NFS_EXPORTER == "off":
        raise InstantError(
            f"This node ({node}) serves no NFS share (NFS_EXPORTER=off): an instant restore boots from a share the "
            "node holding the backup serves."
        )
    cluster = cluster.strip() or (point.vm.cluster.name if point.vm.cluster_id else "")
    if not cluster:
        raise InstantError(f"VM {point.vm.name}'s cluster is not known: name the cluster to boot it in.")
    busy = InstantRestore.objects.active().filter(name=name).first()
    if busy is not None:
        raise InstantError(f"{busy} already boots a VM named {name}: choose another name.")
    with transaction.atomic():
        instant = InstantRestore.objects.create(
            point=point,
            vm=point.vm,
            purpose=purpose,
            name=name,
            cluster=cluster,
            migrate_to=migrate_to.strip(),
            node=node,
            owner=owner,
            who=who,
        )
    try:
        token = hold_points(
            chain_of(point),
            doing="booted",
            holder=str(instant),
            pid=0,
            until=timezone.now() + HOLD_FOR,
        )
    except PointBusy as e:
        instant.delete()
        raise InstantError(f"{e.what}: it cannot be booted now.") from None
    _record(instant, claim=token)
    kind = PROVE if purpose == InstantRestore.Purpose.PROOF else BOOT
    job = _queue(instant, kind, origin=origin, owner=owner, started_by=started_by)
    return instant, job


def request_migrate(*, instant: InstantRestore, to: str, origin: str, owner=None) -> Job:
    if instant.purpose == InstantRestore.Purpose.PROOF:
        raise InstantError(f"{instant} is a restore proof: it is discarded once proved, never migrated.")
    if instant.status != InstantRestore.Status.RUNNING:
        raise InstantError(
            f"{instant} is {instant.get_status_display().lower()}: only one running from its backup migrates."
        )
    if not to.strip():
        raise InstantError("Name the storage domain its disks move to.")
    job = _queue(instant, MIGRATE, origin=origin, owner=owner, params={"to": to.strip()})
    _record(instant, migrate_to=to.strip())  # once queued: a refused request changes nothing
    return job


def request_discard(*, instant: InstantRestore, origin: str, owner=None) -> Job:
    discardable = (
        InstantRestore.Status.RUNNING,
        InstantRestore.Status.DISCARDING,
        InstantRestore.Status.FAILED,
        InstantRestore.Status.BOOTING,  # when no job boots it any more (_queue refuses while one does)
    )
    if instant.status not in discardable or instant.status == InstantRestore.Status.FAILED and instant.tidied:
        raise InstantError(f"{instant} is {instant.get_status_display().lower()}: there is nothing to discard.")
    return _queue(instant, DISCARD, origin=origin, owner=owner)


def _queue(instant: InstantRestore, kind: str, *, origin: str, owner, started_by=None, params=None) -> Job:
    point_vm = instant.vm
    job, created = Job.objects.create_unless_active(
        exclusive=f"instant:{instant.pk}",
        kind=kind,
        vm=point_vm,
        manager=point_vm.manager if point_vm else None,
        owner=owner,
        origin=origin,
        name=f"{instant.name} ({KIND_LABELS[kind].lower()})",
        params={"instant": instant.pk, **(params or {})},
        **({"started_by": started_by} if started_by is not None else {}),
    )
    if not created:
        raise InstantError(f"{job.kind_label} job {job.pk} is already at work on {instant}: wait for it to end.")
    return enqueue(job)


def instant_placement(job: Job) -> Placement:
    node = InstantRestore.objects.filter(pk=job.params.get("instant")).values_list("node", flat=True).first()
    return Placement(node=node or "", says="serves the instant restore's NFS share")


# ----- boot -----------------------------------------------------------------------------------


def run_boot(*, job: Job) -> dict:
    instant = _instant(job)
    started = time.monotonic()
    result = _boot(job=job, instant=instant)
    job.log(
        "info", f"VM {instant.name} is up, running from backup {instant.point_id} ({time.monotonic() - started:.1f} s)"
    )
    if instant.migrate_to:
        # Asked for at the request: this job goes on with it (one job at a time works on an instant restore).
        result |= _migrate(job=job, instant=instant, to=instant.migrate_to)
    return result


def _boot(*, job: Job, instant: InstantRestore, with_nics: bool = True) -> dict:
    point = instant.point
    if point is None:
        fail_instant(instant, "The backup point no longer exists.")
        raise JobError("The backup point no longer exists.")
    manager = point.vm.manager
    cleanup = Cleanup(job, describe=fault_text)
    try:
        with connect(manager) as conn:
            try:
                result = _boot_steps(conn, job=job, instant=instant, point=point, cleanup=cleanup, with_nics=with_nics)
            except BaseException:
                cleanup.run()
                raise
            cleanup.commit()
            job.forget_engine_objects()
            return result
    except BaseException as e:
        words = _words(e)
        fail_instant(instant, f"{instant.step} failed: {words}", tidied=not cleanup.failures)
        if isinstance(e, Cancelled | KeyboardInterrupt | SystemExit):
            raise
        raise JobError(f"{instant.step} failed: {words}") from None


def _boot_steps(
    conn, *, job: Job, instant: InstantRestore, point: BackupPoint, cleanup: Cleanup, with_nics: bool
) -> dict:
    system = conn.system_service()
    cluster = _engine_cluster(system, instant.cluster)
    data_center_id = cluster.data_center.id
    host = _engine_host(system, cluster)
    _step(job, instant, "Laying out the temporary storage domain")
    root = instant_root(point, instant.pk)
    # The share and its directory go only once nothing of them is left on the engine (an engine undo
    # that failed keeps them for the reaper's retry, and the serving node's heartbeat removes them then).
    cleanup.add(f"remove the temporary domain {root}", lambda: None if cleanup.failures else remove_layout(root))
    layout = lay_out(point=point, root=root, name=instant.name, with_nics=with_nics)
    disks = [d.to_json() for d in layout.disks]
    _record(instant, directory=str(root), disks=disks)
    _step(job, instant, "Exporting it over NFS")
    exporter = node_exporter()
    exporter.start()
    export = exporter.export(directory=root, pseudo=str(root), clients=_clients(instant))
    cleanup.add(f"stop the NFS export {export.share}", lambda: None if cleanup.failures else exporter.unexport(export))
    _record(instant, export_id=export.id, share=export.share)
    _step(job, instant, f"Importing storage domain from {export.share}")
    domain_name = f"instant-{instant.pk}"
    domain = import_nfs_domain(
        conn,
        name=domain_name,
        host=host,
        address=export.address,
        port=export.port,
        path=export.pseudo,
        data_center_id=data_center_id,
        job=job,
    )
    cleanup.add(
        f"remove storage domain {domain_name}",
        lambda: remove_imported_domain(
            conn, domain_id=domain.id, name=domain_name, host=host, data_center_id=data_center_id, job=job
        ),
    )
    _record(instant, storage_domain_id=domain.id, storage_domain_name=domain_name, data_center_id=data_center_id)
    data_center = system.data_centers_service().data_center_service(data_center_id).get().name
    _step(job, instant, f"Attaching {domain_name} to data center {data_center} and activating it")
    attach_domain(conn, data_center_id=data_center_id, domain_id=domain.id, name=domain_name, job=job)
    _step(job, instant, f"Registering VM {instant.name} in cluster {instant.cluster}")
    if system.vms_service().list(search=f"name={instant.name}"):
        raise InstantError(f"A VM named {instant.name} exists on the engine: choose another name.")
    vm = register_vm(conn, domain_id=domain.id, vm_id=layout.vm_id, name=instant.name, cluster=instant.cluster, job=job)
    cleanup.add(f"remove VM {instant.name}", lambda: stop_and_remove_vm(conn, vm.id, name=instant.name, job=job))
    _record(instant, vm_engine_id=vm.id)
    _step(job, instant, f"Starting VM {instant.name}")
    vm_service(conn, vm.id).start()
    wait_for(
        lambda: _up(conn, vm.id, instant.name),
        what=f"VM {instant.name} to be up",
        timeout=settings.INSTANT_UP_TIMEOUT,
        job=job,
        interval=0.1,
    )
    # From the job's start: time in the queue is the site's, not the restore's.
    seconds = (timezone.now() - (job.started or instant.created)).total_seconds()
    if not instant.move(
        frm=InstantRestore.Status.BOOTING,
        to=InstantRestore.Status.RUNNING,
        up_at=timezone.now(),
        seconds_to_up=seconds,
        step="Running from the backup",
    ):
        raise InstantError(f"{instant} was changed meanwhile ({_status(instant)}): the VM is taken down again.")
    return {"instant": instant.pk, "vm_id": vm.id, "vm_name": instant.name, "seconds_to_up": round(seconds, 1)}


def _up(conn, vm_id: str, name: str) -> bool:
    vm = vm_service(conn, vm_id).get()
    if vm.status == types.VmStatus.UP:
        return True
    if vm.status == types.VmStatus.DOWN:
        raise InstantError(f"VM {name} went down instead of up (see the engine's events).")
    return False


# ----- migrate ---------------------------------------------------------------------------------


def run_migrate(*, job: Job) -> dict:
    instant = _instant(job)
    return _migrate(job=job, instant=instant, to=job.params.get("to") or instant.migrate_to)


def _migrate(*, job: Job, instant: InstantRestore, to: str) -> dict:
    if not instant.move(
        frm=InstantRestore.Status.RUNNING, to=InstantRestore.Status.MIGRATING, step="Migrating", migrate_to=to
    ):
        raise JobError(f"{instant} is {_status(instant)}: only one running from its backup migrates.")
    total = sum(d["virtual_size"] for d in instant.disks)
    job.set_progress(0, total)
    done = 0
    try:
        with connect(instant.point.vm.manager) as conn:
            for disk in instant.disks:
                _step(job, instant, f"Moving disk {disk['alias']} to {instant.migrate_to}")
                move_disk(
                    conn,
                    disk_id=disk["image_id"],
                    alias=disk["alias"],
                    domain=instant.migrate_to,
                    job=job,
                    progress=lambda f, base=done, size=disk["virtual_size"]: job.set_progress(base + int(f * size)),
                )
                done += disk["virtual_size"]
                job.set_progress(done)
            _step(job, instant, f"Removing storage domain {instant.storage_domain_name}")
            _take_out_domain(conn, job=job, instant=instant)
    except BaseException as e:
        said = f"{instant.step} failed: {_words(e)}"
        instant.move(frm=InstantRestore.Status.MIGRATING, to=InstantRestore.Status.RUNNING, error=said)
        if isinstance(e, Cancelled | KeyboardInterrupt | SystemExit):
            raise
        raise JobError(f"{said} VM {instant.name} runs from the backup still; ask for the migration again.") from None
    unserve(instant)
    instant.move(frm=InstantRestore.Status.MIGRATING, to=InstantRestore.Status.DONE, step="Migrated", tidied=True)
    release_hold(instant.claim)
    job.log("info", f"VM {instant.name}'s disks are on {instant.migrate_to}; the backup is no longer in use")
    return {"instant": instant.pk, "vm_id": instant.vm_engine_id, "migrated_to": instant.migrate_to}


# ----- discard ---------------------------------------------------------------------------------


def run_discard(*, job: Job) -> dict:
    instant = _instant(job)
    if not instant.move(
        frm=(
            InstantRestore.Status.RUNNING,
            InstantRestore.Status.DISCARDING,
            InstantRestore.Status.FAILED,
            InstantRestore.Status.BOOTING,
        ),
        to=InstantRestore.Status.DISCARDING,
        step="Discarding",
    ):
        raise JobError(f"{instant} is {_status(instant)}: there is nothing to discard.")
    return _discard(job=job, instant=instant)


def _discard(*, job: Job, instant: InstantRestore) -> dict:
    with connect(instant.point.vm.manager if instant.point else instant.vm.manager) as conn:
        if instant.vm_engine_id:
            _step(job, instant, f"Stopping and removing VM {instant.name}")
            stop_and_remove_vm(conn, instant.vm_engine_id, name=instant.name, job=job)
        if instant.storage_domain_id:
            _step(job, instant, f"Removing storage domain {instant.storage_domain_name}")
            _take_out_domain(conn, job=job, instant=instant)
    unserve(instant)
    kept = _point_problem(instant)
    instant.move(
        frm=(InstantRestore.Status.DISCARDING,),
        to=InstantRestore.Status.DISCARDED,
        step="Discarded",
        tidied=True,
    )
    release_hold(instant.claim)
    job.log(
        "info" if not kept else "error",
        kept or f"Backup {instant.point_id} is as it was: its files match their checksums",
    )
    return {"instant": instant.pk, "backup_intact": not kept}


def _point_problem(instant: InstantRestore) -> str:
    """The backup's files still match their checksums ("" when they do)."""
    point = instant.point
    if point is None:
        return ""
    for disk in point.manifest().disks:
        problem = files_problem(chain_files(point, disk.disk_id))
        if problem:
            return f"Backup {point.pk} no longer matches its checksums: {problem}"
    return ""


# ----- proof -------------------------------------------------------------------------------------


def run_proof(*, job: Job) -> dict:
    """Boot the point without network, wait for up and for the guest agent's answer, discard: the VM
    is discarded whatever the answer (a proof never leaves a VM running from the backup)."""
    instant = _instant(job)
    try:
        _boot(job=job, instant=instant, with_nics=False)
    except Cancelled:
        raise
    except BaseException as e:
        _record(instant, proof_ok=False)
        raise JobError(f"The restore proof of backup {instant.point_id} failed. {e}") from None
    answer, failure = "", None
    try:
        answer = _guest_answer(job, instant)
    except Cancelled:
        failure = None
        cancelled = True
    except BaseException as e:
        failure, cancelled = e, False
    else:
        cancelled = False
    _record(instant, proof_ok=failure is None and not cancelled, proof_answer=answer)
    instant.move(frm=InstantRestore.Status.RUNNING, to=InstantRestore.Status.DISCARDING, step="Discarding")
    result = _discard(job=job, instant=instant)
    if cancelled:
        raise Cancelled()
    if failure is not None:
        raise JobError(
            f"The restore proof of backup {instant.point_id} failed: VM {instant.name} was up, but {failure}"
        )
    job.log(
        "info", f"VM {instant.name} booted from backup {instant.point_id} in {instant.seconds_to_up:.1f} s: {answer}"
    )
    return {**result, "seconds_to_up": instant.seconds_to_up, "answer": answer}


def _guest_answer(job: Job, instant: InstantRestore) -> str:
    """What the guest agent says of the running guest; "up" alone when the VM had no agent."""
    source = instant.vm
    if source is None or not source.guest_agent:
        return "the VM is up (it had no guest agent to answer)"
    _step(job, instant, "Waiting for the guest agent")
    with connect(instant.point.vm.manager) as conn:

        def answered():
            vm = vm_service(conn, instant.vm_engine_id).get()
            if vm.fqdn or vm.guest_operating_system:
                os_ = vm.guest_operating_system
                said = f"{os_.distribution} {os_.version.full_version if os_.version else ''}".strip() if os_ else ""
                return f"guest agent answered: {vm.fqdn or 'no FQDN'}, {said or 'no OS'}"
            return None

        return wait_for(
            answered,
            what=f"VM {instant.name}'s guest agent",
            timeout=settings.PROOF_AGENT_TIMEOUT,
            job=job,
            interval=0.5,
        )


# ----- shared steps ------------------------------------------------------------------------------


def _instant(job: Job) -> InstantRestore:
    try:
        return InstantRestore.objects.select_related("point__vm__manager", "vm__manager").get(pk=job.params["instant"])
    except InstantRestore.DoesNotExist:
        raise JobError("The instant restore no longer exists.") from None


def _words(error: BaseException) -> str:
    """An error for people: ours as they are, the engine's in its own words."""
    if isinstance(error, InstantError | JobError | NfsError):
        return str(error)
    return fault_text(error)


def _record(instant: InstantRestore, **fields) -> None:
    """What the boot made, recorded as it is made (a later step, or another job, undoes it from here)."""
    InstantRestore.objects.filter(pk=instant.pk).update(**fields)
    for name, value in fields.items():
        setattr(instant, name, value)


def _step(job: Job, instant: InstantRestore, what: str) -> None:
    _record(instant, step=what)
    job.log("info", what)
    job.check_cancel()


def _status(instant: InstantRestore) -> str:
    instant.refresh_from_db(fields=["status"])
    return instant.get_status_display().lower()


def fail_instant(instant: InstantRestore, error: str, *, tidied: bool = False) -> None:
    moved = instant.move(frm=InstantRestore.ACTIVE, to=InstantRestore.Status.FAILED, error=error, tidied=tidied)
    if moved and tidied:
        release_hold(instant.claim)


def _engine_cluster(system, name: str) -> types.Cluster:
    found = [c for c in system.clusters_service().list(search=f"name={name}") if c.name == name]
    if not found:
        raise InstantError(f"No cluster named {name} on the engine.")
    return found[0]


def _engine_host(system, cluster: types.Cluster) -> str:
    hosts = [
        h for h in system.hosts_service().list(search=f"cluster={cluster.name}") if h.status == types.HostStatus.UP
    ]
    if not hosts:
        raise InstantError(f"Cluster {cluster.name} has no host up to mount the temporary domain.")
    return hosts[0].name


def _clients(instant: InstantRestore) -> list[str]:
    """Who may mount the share: every host of the data center the domain is attached to (the engine
    has each of them connect to an attached domain, and sets one that cannot non-operational), of
    this engine; and NFS_CLIENTS, where the hosts reach the node from other addresses."""
    cluster = Cluster.objects.filter(manager_id=instant.vm.manager_id, name=instant.cluster).first()
    hosts = Host.objects.filter(manager_id=instant.vm.manager_id).exclude(address="")
    if cluster is not None and cluster.data_center_id is not None:
        hosts = hosts.filter(cluster__data_center_id=cluster.data_center_id)
    else:
        hosts = hosts.filter(cluster__name=instant.cluster)
    addresses = set(hosts.values_list("address", flat=True))
    if settings.NFS_NETNS:
        addresses.add("127.0.0.1")  # in the hosts' storage network they mount from its loopback
    return sorted(addresses | set(settings.NFS_CLIENTS))


def _take_out_domain(conn, *, job: Job, instant: InstantRestore) -> None:
    remove_imported_domain(
        conn,
        domain_id=instant.storage_domain_id,
        name=instant.storage_domain_name,
        host=_engine_host(conn.system_service(), _engine_cluster(conn.system_service(), instant.cluster)),
        data_center_id=instant.data_center_id,
        job=job,
    )


def unserve(instant: InstantRestore) -> None:
    """This node stops serving the temporary domain, and its directory goes (the point keeps its files)."""
    if instant.export_id is not None:
        exporter = node_exporter()
        for export in exporter.exports():
            if export.id == instant.export_id and str(export.directory) == instant.directory:
                exporter.unexport(export)
    if instant.directory:
        remove_layout(Path(instant.directory))
