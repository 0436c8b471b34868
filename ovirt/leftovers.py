"""What an interrupted run leaves on the engine, found and closed.

Two lines of defence: a job records each object it makes (`remember_engine_object`) and the
reaper undoes a dead job's list (`undo_engine_objects`); the next backup of a VM also closes
whatever of ours it finds on it (`clean_leftovers`), for a record that was lost.
"""

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from ovirt.backups import BACKUP_PREFIX, finalize_backup, open_backups
from ovirt.disks import remove_disk
from ovirt.errors import EngineError, fault_text
from ovirt.snapshots import SNAPSHOT_PREFIX, remove_snapshot
from ovirt.transfers import cancel_open_transfers, cancel_transfer
from ovirt.vms import remove_vm, vm_disks, vm_service

log = logging.getLogger("ovirt")


def clean_leftovers(connection, vm_id: str, *, keep: set[str], job=None) -> None:
    """Close what an interrupted run left on the engine: transfers on the VM's disks, our VM backups
    still open (the engine starts no other backup of the VM meanwhile), our snapshots not kept."""
    cancel_open_transfers(connection, {d.id for d in vm_disks(connection, vm_id)}, job=job)
    for backup in open_backups(connection, vm_id):
        if (backup.description or "").startswith(BACKUP_PREFIX):
            if job:
                job.log("warning", f"Finalizing VM backup {backup.id} left by an earlier run ({backup.phase.value})")
            try:
                finalize_backup(connection, vm_id, backup.id, job=job)
            except EngineError as e:
                # It has ended either way, and its data was never part of a point.
                if job:
                    job.log("warning", str(e))
    for snap in vm_service(connection, vm_id).snapshots_service().list():
        if (snap.description or "").startswith(SNAPSHOT_PREFIX) and snap.id not in keep:
            if job:
                job.log("warning", f"Removing snapshot '{snap.description}' left by an earlier run")
            remove_snapshot(connection, vm_id, snap.id, job=job)


# The kinds of records `undo_engine_objects` undoes (a job may record others, for its own handler:
# the SSH transfer's activated logical volumes).
ENGINE_KINDS = ("transfer", "backup", "snapshot", "vm", "disk", "renamed_vm")


def describe_engine_object(obj: dict) -> str:
    """One recorded object for people, by name and id: "disk web01_data (ID)"."""
    kind, engine_id, name = obj["kind"], obj["id"], obj.get("name", "")
    if kind == "snapshot":
        return f"snapshot '{name}' ({engine_id})" if name else f"snapshot {engine_id}"
    if kind == "transfer":
        return f"image transfer {engine_id}"
    if kind == "backup":
        return f"VM backup {engine_id}"
    if kind == "renamed_vm":
        return f"VM {engine_id} renamed aside from {name}"
    if kind == "lv":
        return f"logical volume {engine_id} active on a host"
    label = {"vm": "VM", "disk": "disk"}.get(kind, kind)
    return f"{label} {name} ({engine_id})" if name else f"{label} {engine_id}"


def undo_engine_objects(
    connection,
    objects: list[dict],
    *,
    job=None,
    snapshot_removal: Callable[[str, str], AbstractContextManager[str]] | None = None,
) -> list[str]:
    """Undo, newest first, what a job recorded with `remember_engine_object` and did not undo itself
    (its worker died, or the engine did not answer its cleanup): cancel its image transfers (and any
    still open on disks it made), finalize its VM backups (after their transfers, recorded later),
    remove the snapshots, VM and disks it created, and give a VM it renamed aside its name back.

    Each record undone (or found gone already) is dropped from the job; what could not be undone
    keeps its record, for the next pass, and is returned in words.

    `snapshot_removal(vm_id, snapshot_id)`, when given, is entered around the removal of a snapshot and
    gives why it must not be asked now ("" when it may: see jobs.snapshot_removals); such a snapshot
    keeps its record, for the next pass."""
    system = connection.system_service()
    say = job.log if job else lambda level, message: log.info(message)
    forget = job.forget_engine_object if job else lambda engine_id: None
    cancel_open_transfers(connection, {o["id"] for o in objects if o["kind"] == "disk"}, job=job)
    failures = []
    for obj in reversed(objects):
        kind, engine_id, name = obj["kind"], obj["id"], obj.get("name", obj["id"])
        if kind not in ENGINE_KINDS:
            continue  # its handler's to undo
        what = describe_engine_object(obj)
        try:
            if kind == "transfer":
                if cancel_transfer(connection, engine_id, job=job):
                    say("warning", f"Cancelled {what}, which this job had left open")
            elif kind == "backup":
                try:
                    finalize_backup(connection, obj["vm"], engine_id, job=job)
                except EngineError as e:
                    say("warning", str(e))  # it has ended either way
                say("warning", f"Finalized {what}, which this job had left open")
            elif kind == "snapshot":
                with snapshot_removal(obj["vm"], engine_id) if snapshot_removal else nullcontext("") as why_not:
                    if why_not:
                        say("warning", f"{what[0].upper()}{what[1:]} is left for now: {why_not}")
                        continue
                    # Not waiting for the merge: other dead jobs are waiting to be reaped.
                    remove_snapshot(connection, obj["vm"], engine_id, job=job, wait=False)
                say("warning", f"Removing {what}, which this job had taken (the engine merges it)")
            elif kind == "vm":
                remove_vm(connection, engine_id, name=name, job=job)
                say("warning", f"Removed {what}, which this job had created")
            elif kind == "disk":
                remove_disk(connection, engine_id, name=name, job=job)
                say("warning", f"Removed {what}, which this job had created")
            elif kind == "renamed_vm":
                named = system.vms_service().list(search=f"name={name}")
                if any(v.name == name and v.id != engine_id for v in named):
                    failures.append(f"VM {engine_id} keeps its temporary name: another VM is named {name} now")
                    continue
                vm_service(connection, engine_id).update(types.Vm(name=name))
                say("warning", f"Gave VM {engine_id} its name {name} back")
        except sdk.NotFoundError:
            pass  # gone already (a VM's removal takes its disks; the engine drops a cancelled upload's)
        except (sdk.Error, EngineError) as e:
            failures.append(f"{what}: {fault_text(e)}")
            continue
        forget(engine_id)
    for failure in failures:
        say("error", f"Could not undo: {failure}")
    return failures
