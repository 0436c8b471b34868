"""The serving node's upkeep of its instant restores (its worker's heartbeat, jobs.nodes hooks): the
holds on their points move on, the room their top layers take is measured, a record no job works on
any more is ended, and what ended ones left on the node goes once nothing of it is left on the
engine; and what a job of one whose worker died leaves to its record (the reaper's hook)."""

from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from jobs.models import Job
from recovery.instant.layout import top_bytes
from recovery.instant.workflow import BOOT, HOLD_FOR, KIND_LABELS, MIGRATE, PROVE, fail_instant, unserve
from recovery.models import InstantRestore
from repository.claims import extend_hold, release_hold


def keep_instant_restores_here() -> int:
    """The node's heartbeat: the holds of its running instant restores move on, and what ended ones
    left (a boot whose worker died: the reaper undid its engine objects) is removed here."""
    until = timezone.now() + HOLD_FOR
    kept = 0
    settled = timezone.now() - timedelta(seconds=60)  # a request makes the record, then its job
    for instant in InstantRestore.objects.active().here():
        if instant.claim is not None:
            kept += extend_hold(instant.claim, until=until)
        _measure(instant)
        if instant.created < settled and not _jobs(instant).active().exists():
            _orphaned(instant)
    for instant in InstantRestore.objects.untidy().here():
        if _jobs(instant).filter(result__has_key="engine_objects").exists():
            continue  # the reaper has not undone everything on the engine yet: the share stays meanwhile
        unserve(instant)
        InstantRestore.objects.filter(pk=instant.pk).update(tidied=True)
        release_hold(instant.claim)
    return kept


def _jobs(instant: InstantRestore):
    return Job.objects.filter(kind__in=KIND_LABELS, params__instant=instant.pk)


def _orphaned(instant: InstantRestore) -> None:
    """An active instant restore no job works on any more, though its state says one does: a boot
    cancelled before it ran (the state is then still booting, nothing was made), a migration whose job
    ended without saying (back to running)."""
    if instant.status == InstantRestore.Status.BOOTING and not instant.storage_domain_id and not instant.export_id:
        fail_instant(instant, "Its boot job ended before it started (cancelled).", tidied=True)
    elif instant.status == InstantRestore.Status.MIGRATING:
        instant.move(
            frm=InstantRestore.Status.MIGRATING,
            to=InstantRestore.Status.RUNNING,
            error="Its migration job ended without finishing; ask for the migration again.",
        )


def _measure(instant: InstantRestore) -> None:
    """Record what its writable top layers take now (the pages show it): only the serving node can
    look, so its heartbeat does, not a page."""
    root = Path(instant.directory) if instant.directory else None
    if root is None or not instant.disks:
        return
    try:  # a destination gone meanwhile must not stop the heartbeat
        found = [d.name for d in root.iterdir() if d.is_dir()] if root.is_dir() else []  # ROOT/SD_ID
        domain_id = found[0] if len(found) == 1 else instant.storage_domain_id
        used = top_bytes(root, domain_id, instant.disks) if domain_id else instant.top_bytes
    except OSError:
        return
    if used != instant.top_bytes:
        InstantRestore.objects.filter(pk=instant.pk).update(top_bytes=used)


def abandon_instant(job: Job) -> None:
    """A job of an instant restore whose worker died (the reaper has undone its engine objects)."""
    instant = InstantRestore.objects.filter(pk=job.params.get("instant")).first()
    if instant is None:
        return
    if job.kind in (BOOT, PROVE):
        fail_instant(instant, f"Its worker stopped during: {instant.step or 'the start'}.")
    elif job.kind == MIGRATE:
        instant.move(
            frm=InstantRestore.Status.MIGRATING,
            to=InstantRestore.Status.RUNNING,
            error="The migration's worker stopped; ask for the migration again.",
        )
