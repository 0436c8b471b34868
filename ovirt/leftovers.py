"""What an interrupted run leaves on the engine, found and closed.

Two lines of defence: a job records each object it makes (`remember_engine_object`) and the
reaper undoes a dead job's list (`undo_engine_objects`); the next backup of a VM also closes
whatever of ours it finds on it (`clean_leftovers`), for a record that was lost.

How a record is undone is registered by the kind's owner (`register_undo`): this module registers
the engine objects the engine client makes (snapshots, image transfers, VM backups, disks, VMs);
an app above registers what it records itself (recovery: a VM renamed aside; the hosts over SSH:
a logical volume activated on a host). The registry is here, in the lowest layer that runs it,
since the reaper's undo (jobs.tasks) and every owner can reach it; a record of a kind nobody
registered is reported as not undone, never dropped.
"""

import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import ovirtsdk4 as sdk

from core.errors import OperatorError
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


# ----- the registry of undos, by record kind ---------------------------------------------------


class LeftForNow(Exception):
    """Raised by an undo: the object may not be undone now (the message says why); its record stays,
    for the next pass, and it is no failure."""


@dataclass
class UndoContext:
    """What an undo is given besides the record: the engine connection (None where the caller has
    none: an undo that needs no engine, such as an LV's on a host), the job, and where to say things."""

    connection: object
    job: object = None
    # Entered around a snapshot's removal; gives why it must not be asked now ("" when it may).
    snapshot_removal: Callable[[str, str], AbstractContextManager[str]] | None = None

    def say(self, level: str, message: str) -> None:
        if self.job is not None:
            self.job.log(level, message)
        else:
            log.info(message)


@dataclass(frozen=True)
class Undo:
    kind: str
    # Undoes one record; returns what it did, for the job's log ("" says nothing). Raises LeftForNow,
    # or an error (OperatorError, sdk.Error, OSError) that keeps the record; sdk.NotFoundError means
    # it is gone already. The caller drops the record when it returns.
    undo: Callable[[UndoContext, dict], str]
    # The record for people, by name and id: "disk web01_data (ID)".
    describe: Callable[[dict], str]
    # Run once over all the records of this kind before any is undone (disks: their open transfers).
    first: Callable[[UndoContext, list[dict]], None] | None = None


UNDOS: dict[str, Undo] = {}


def register_undo(
    kind: str,
    undo: Callable[[UndoContext, dict], str],
    *,
    describe: Callable[[dict], str],
    first: Callable[[UndoContext, list[dict]], None] | None = None,
) -> None:
    """How the records of `kind` (`job.remember_engine_object(kind, id, ...)`) are undone and told.
    Registered once per kind, by the code that records it; registering another undo for a kind that
    has one is a mistake, and raises."""
    known = UNDOS.get(kind)
    if known is not None and (known.undo, known.describe, known.first) != (undo, describe, first):
        raise ValueError(f"An undo is already registered for engine object records of kind {kind!r}.")
    UNDOS[kind] = Undo(kind, undo, describe, first)


def describe_engine_object(obj: dict) -> str:
    """One recorded object for people, by name and id: "disk web01_data (ID)"."""
    known = UNDOS.get(obj["kind"])
    if known is not None:
        return known.describe(obj)
    name = obj.get("name", "")
    return f"{obj['kind']} {name} ({obj['id']})" if name else f"{obj['kind']} {obj['id']}"


def unknown_kind(obj: dict) -> str:
    return (
        f"{describe_engine_object(obj)}: no undo is registered for records of kind {obj['kind']!r} "
        f"(known: {', '.join(sorted(UNDOS))}); undo it by hand, or run a version that knows it"
    )


def undo_engine_objects(
    connection,
    objects: Iterable[dict],
    *,
    job=None,
    snapshot_removal: Callable[[str, str], AbstractContextManager[str]] | None = None,
) -> list[str]:
    """Undo, newest first, what a job recorded with `remember_engine_object` and did not undo itself
    (its worker died, or the engine did not answer its cleanup), each record by the undo its kind's
    owner registered: cancel its image transfers (and any still open on disks it made), finalize its
    VM backups (after their transfers, recorded later), remove the snapshots, VM and disks it
    created, give a VM it renamed aside its name back, deactivate the logical volumes it activated.

    Each record undone (or found gone already) is dropped from the job; what could not be undone
    keeps its record, for the next pass, and is returned in words; so is a record of a kind nobody
    registered (it is not guessed at, and not dropped).

    `snapshot_removal(vm_id, snapshot_id)`, when given, is entered around the removal of a snapshot and
    gives why it must not be asked now ("" when it may: see jobs.snapshot_removals); such a snapshot
    keeps its record, for the next pass."""
    objects = list(objects)
    context = UndoContext(connection, job, snapshot_removal)
    forget = job.forget_engine_object if job else lambda engine_id: None
    for kind, undo in UNDOS.items():
        mine = [o for o in objects if o["kind"] == kind]
        if mine and undo.first is not None:
            undo.first(context, mine)
    failures = []
    for obj in reversed(objects):
        undo = UNDOS.get(obj["kind"])
        if undo is None:
            failures.append(unknown_kind(obj))
            continue
        try:
            said = undo.undo(context, obj)
        except LeftForNow as e:
            context.say("warning", f"{_capital(undo.describe(obj))} is left for now: {e}")
            continue
        except sdk.NotFoundError:
            said = ""  # gone already (a VM's removal takes its disks; the engine drops a cancelled upload's)
        except (sdk.Error, OperatorError, OSError) as e:
            failures.append(f"{undo.describe(obj)}: {fault_text(e)}")
            continue
        if said:
            context.say("warning", said)
        forget(obj["id"])
    for failure in failures:
        context.say("error", f"Could not undo: {failure}")
    return failures


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# ----- the engine client's own kinds ------------------------------------------------------------


def _named(label: str) -> Callable[[dict], str]:
    def describe(obj: dict) -> str:
        name = obj.get("name", "")
        return f"{label} {name} ({obj['id']})" if name else f"{label} {obj['id']}"

    return describe


def _undo_transfer(context: UndoContext, obj: dict) -> str:
    if cancel_transfer(context.connection, obj["id"], job=context.job):
        return f"Cancelled image transfer {obj['id']}, which this job had left open"
    return ""


def _undo_backup(context: UndoContext, obj: dict) -> str:
    try:
        finalize_backup(context.connection, obj["vm"], obj["id"], job=context.job)
    except EngineError as e:
        context.say("warning", str(e))  # it has ended either way
    return f"Finalized VM backup {obj['id']}, which this job had left open"


def _describe_snapshot(obj: dict) -> str:
    name = obj.get("name", "")
    return f"snapshot '{name}' ({obj['id']})" if name else f"snapshot {obj['id']}"


def _undo_snapshot(context: UndoContext, obj: dict) -> str:
    removal = context.snapshot_removal
    with removal(obj["vm"], obj["id"]) if removal else nullcontext("") as why_not:
        if why_not:
            raise LeftForNow(why_not)
        # Not waiting for the merge: other dead jobs are waiting to be reaped.
        remove_snapshot(context.connection, obj["vm"], obj["id"], job=context.job, wait=False)
    return f"Removing {_describe_snapshot(obj)}, which this job had taken (the engine merges it)"


def _undo_vm(context: UndoContext, obj: dict) -> str:
    remove_vm(context.connection, obj["id"], name=obj.get("name", obj["id"]), job=context.job)
    return f"Removed {_named('VM')(obj)}, which this job had created"


def _undo_disk(context: UndoContext, obj: dict) -> str:
    remove_disk(context.connection, obj["id"], name=obj.get("name", obj["id"]), job=context.job)
    return f"Removed {_named('disk')(obj)}, which this job had created"


def _cancel_transfers_on_disks(context: UndoContext, disks: list[dict]) -> None:
    # An upload into a disk the job made keeps the disk locked: its transfers go before anything else.
    cancel_open_transfers(context.connection, {o["id"] for o in disks}, job=context.job)


register_undo("transfer", _undo_transfer, describe=lambda obj: f"image transfer {obj['id']}")
register_undo("backup", _undo_backup, describe=lambda obj: f"VM backup {obj['id']}")
register_undo("snapshot", _undo_snapshot, describe=_describe_snapshot)
register_undo("vm", _undo_vm, describe=_named("VM"))
register_undo("disk", _undo_disk, describe=_named("disk"), first=_cancel_transfers_on_disks)
