"""Snapshot removals and the VM's backups: our code never starts removing a snapshot of a VM while
one of our backups of that VM runs.

Why: removing a snapshot makes the engine merge its volume with the next one up and delete one of
them. A backup that reads the VM's volumes behind the engine's back (the SSH transfer: nothing on the
engine holds the disks it reads) would read a chain that changes under it, and a real engine allows
that removal just the same. So the product keeps its own removals apart from its backups:

- A removal asked outside the VM's backups (retention's `remove_unused_bases`, a deletion, the
  reaper undoing a dead job's snapshot) first announces itself (`snapshot_removal`: a committed
  SnapshotRemoval row), then looks for a running backup of the VM. If there is one, the removal is
  not asked: the snapshot is ours and no kept point records it, so the VM's next backup removes it
  (`clean_leftovers`, waiting for the merge) before it reads anything; a job's record of it stays
  for the reaper's next pass.
- A backup, once it runs (its job's RUNNING status committed), waits until no removal of its VM is
  announced (`await_snapshot_removals`) before it looks at the VM's snapshots and disks. A removal it
  waited for was asked of the engine by then, so the engine has locked the disks, and the backup's
  disk selection waits for the merge to end.

Of a removal and a backup that start together, each writes its row first and looks for the other's
after, so the one that looks last sees the other: either the removal is not asked, or the backup
waits for it to be asked and merged. No order of the two lets a merge start while the backup reads.
What a killed process announced lasts while its process lives on its node, and at most REMOVAL_TTL.
"""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from core.holders import holder_alive
from jobs.kinds import vm_disk_reading_kinds
from jobs.models import Job, SnapshotRemoval

# The most a removal's announcement lasts: one request and its retries (ovirt.polling) take far less.
REMOVAL_TTL = timedelta(minutes=10)


def running_backup(vm_engine_id: str) -> Job | None:
    """Our backup of this VM that runs now, if any (a job of a kind registered as reading its VM's disks)."""
    running = Job.objects.running().filter(kind__in=vm_disk_reading_kinds(), vm__engine_id=vm_engine_id)
    return running.order_by("pk").first()


@contextmanager
def snapshot_removal(vm_engine_id: str, snapshot_id: str, *, holder: str) -> Iterator[Job | None]:
    """Announce the removal of a snapshot of this VM while it is asked; yields the VM's running backup
    (the removal must not be asked then) or None (ask it now, inside the block)."""
    row = SnapshotRemoval.objects.create(
        vm_engine_id=vm_engine_id,
        snapshot_id=snapshot_id,
        holder=holder,
        node=settings.NODE_NAME,
        pid=os.getpid(),
        expires=timezone.now() + REMOVAL_TTL,
    )
    try:
        yield running_backup(vm_engine_id)
    finally:
        row.delete()


def announced_removals(vm_engine_id: str) -> list[SnapshotRemoval]:
    """The removals of this VM's snapshots being asked now (those of dead processes forgotten)."""
    SnapshotRemoval.objects.filter(expires__lte=timezone.now()).delete()
    rows = list(SnapshotRemoval.objects.filter(vm_engine_id=vm_engine_id))
    dead = [r.pk for r in rows if not holder_alive(node=r.node, pid=r.pid)]
    if dead:
        SnapshotRemoval.objects.filter(pk__in=dead).delete()
    return [r for r in rows if r.pk not in dead]


def await_snapshot_removals(job: Job, vm_engine_id: str) -> None:
    """A backup of the VM, once running: wait while a removal of one of the VM's snapshots is being
    asked (see the module's docstring); the job beats and may be cancelled meanwhile. An
    announcement lasts at most REMOVAL_TTL, so this ends."""
    said = False
    while rows := announced_removals(vm_engine_id):
        if not said:
            job.log("info", f"Waiting for the {rows[0]} to be asked of the engine")
            said = True
        job.check_cancel()
        time.sleep(0.2)
