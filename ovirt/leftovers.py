"""What an interrupted run leaves on the engine, found and closed.

Two lines of defence: a job records each object it makes (`remember_engine_object`) and the
reaper undoes a dead job's list (`undo_engine_objects`); the next backup of a VM also closes
whatever of ours it finds on it (`clean_leftovers`), for a record that was lost.
"""

import logging

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


def undo_engine_objects(connection, objects: list[dict], *, job=None) -> list[str]:
    """Undo, newest first, what a job whose worker died recorded with `remember_engine_object`:
    cancel its image transfers (and any still open on disks it made), finalize its VM backups
    (after their transfers, recorded later), remove the snapshots, VM and
    disks it created, and give a VM it renamed aside its name back. Returns what could not be
    undone, for people to see."""
    system = connection.system_service()
    say = job.log if job else lambda level, message: log.info(message)
    cancel_open_transfers(connection, {o["id"] for o in objects if o["kind"] == "disk"}, job=job)
    failures = []
    for obj in reversed(objects):
        kind, engine_id, name = obj["kind"], obj["id"], obj.get("name", obj["id"])
        try:
            if kind == "transfer":
                if cancel_transfer(connection, engine_id, job=job):
                    say("warning", f"Cancelled image transfer {engine_id}, which the stopped worker had open")
            elif kind == "backup":
                try:
                    finalize_backup(connection, obj["vm"], engine_id, job=job)
                except EngineError as e:
                    say("warning", str(e))  # it has ended either way
                say("warning", f"Finalized VM backup {engine_id}, which the stopped worker had open")
            elif kind == "snapshot":
                # Not waiting for the merge: other dead jobs are waiting to be reaped.
                remove_snapshot(connection, obj["vm"], engine_id, job=job, wait=False)
                say("warning", f"Removing snapshot '{name}' ({engine_id}), which the stopped worker had taken")
            elif kind == "vm":
                remove_vm(connection, engine_id, name=name, job=job)
                say("warning", f"Removed VM {name} ({engine_id}), which the stopped worker had created")
            elif kind == "disk":
                remove_disk(connection, engine_id, job=job)
                say("warning", f"Removed disk {name} ({engine_id}), which the stopped worker had created")
            elif kind == "renamed_vm":
                if any(v.name == name for v in system.vms_service().list(search=f"name={name}")):
                    failures.append(f"VM {engine_id} keeps its temporary name: another VM is named {name} now")
                    continue
                vm_service(connection, engine_id).update(types.Vm(name=name))
                say("warning", f"Gave VM {engine_id} its name {name} back")
        except sdk.NotFoundError:
            continue  # gone already (a VM's removal takes its disks; the engine drops a cancelled upload's)
        except (sdk.Error, EngineError) as e:
            failures.append(f"{kind} {name} ({engine_id}): {fault_text(e)}")
    for failure in failures:
        say("error", f"Could not undo: {failure}")
    return failures
