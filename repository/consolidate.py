"""Consolidation: an incremental point becomes a full, so the points it was read through can go.

Destinations are often network shares (NFS, SMB, sshfs), which have no atomic directory exchange
(renameat2 RENAME_EXCHANGE) but do replace one file by another in one rename. So the point's
manifest is the one switch, in five steps, each of which leaves every point verifying clean if the
process is killed after it:

1. build_full: each incremental disk of the point is rewritten as a standalone QCOW2 with
   `qemu-img convert` of its whole chain, into the staging directory DEST/VM/BACKUP_ID/.merge/
   (same file names), compared with the original (`qemu-img compare`), checked, fsynced and
   checksummed. Nothing refers to these files yet: a kill leaves the old manifest valid and the
   staging directory garbage, which the next prune (or backup, or the reaper) removes.
2. name_merged: the manifest is rewritten (atomically: temporary file + rename) with each merged
   image's checksum beside the layer's (`merged_checksum`). From here on the consolidation is
   rolled forward, never back: each disk's file may be either the layer or its merged image,
   which show the guest the same content, and verify accepts both.
3. replace_images: each merged image is renamed over the layer's file. The file keeps its name,
   so the points built on this one keep their backing path (../BACKUP_ID/DISK.qcow2), their
   files and their manifests untouched.
4. write_full_manifest: the manifest says full, names the merged checksums only, no parent.
5. record_full: the rows follow; the staging directory goes; the expired parents may be deleted.

Why convert into a new file and not `qemu-img rebase -b ""` or `qemu-img commit`: both write into
an existing image in place (rebase into the kept point, commit into the expired full), so a kill
half-way leaves a file that matches no checksum; convert only reads what exists and writes a
file nobody refers to until the manifest names it. It costs the room of one full disk while it
runs, and time: `bench/consolidate.py` measured 1.15 s for convert against 0.26 s for rebase or
commit (1 GiB disk, 256 MiB data, 64 MiB changed), and after a SIGKILL half-way, rebase and
commit had each left an image that no longer matched its checksum; convert had left every image
as it was.

Any failure before the switch (a full destination above all) removes the staging directory at
once, so a failed merge never keeps the destination full. `finish_consolidation` is called
before any later work on the point (and by every prune, by a backup of the VM, and by the reaper
of a dead retention job): it finishes a consolidation past its switch, removes staging before
it, and brings the rows in line with the manifest.

The caller holds the points EXCLUSIVE (repository.claims; prune_policy claims every point its plan
merges, rewrites or deletes; finish_consolidations claims each point it finishes), so no restore,
verify or backup reads the chain meanwhile.
"""

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path

from django.db import transaction
from django.utils import timezone

from repository.manifest import Manifest
from repository.models import BackupPoint, DiskBackup
from repository.storage import RepositoryError, checksum_file, free_bytes, fsync_dir, fsync_file

STAGING = ".merge"
MiB = 1024**2


def staging_dir(point: BackupPoint) -> Path:
    return point.directory.path / STAGING


def consolidate(point: BackupPoint, *, log=None, beat=None) -> BackupPoint:
    """Make an incremental point a standalone full; its parents are then free to delete.

    `beat` is called every few seconds while qemu-img works (a job's heartbeat: a merge of a large
    disk takes minutes, and a silent job is taken for one whose worker died)."""
    log = log or (lambda message: None)
    finish_consolidation(point)
    point.refresh_from_db()
    if point.type == BackupPoint.Type.FULL:
        return point
    stage = staging_dir(point)
    try:
        manifest = build_full(point, beat=beat)
        log(f"Backup {point.pk}: every disk merged into a standalone image, compared and checked")
        record_merged(point, manifest)
        name_merged(point, manifest)
    except BaseException as e:
        # Before the switch: the point is as it was, and what was staged must not keep the room.
        filled = _filled_up(e, point.directory.path)
        shutil.rmtree(stage, ignore_errors=True)
        if filled:
            raise RepositoryError(
                f"Backup {point.pk} cannot become a full: the destination filled up while its chain was "
                f"merged ({e}). What was merged is removed and its chain is kept as it is; free space on the "
                "destination and prune again."
            ) from None
        if isinstance(e, OSError):
            raise RepositoryError(
                f"Backup {point.pk} cannot become a full: writing its merged image failed ({e.strerror or e}). "
                "What was merged is removed and its chain is kept as it is."
            ) from None
        raise
    try:
        complete_consolidation(point)
    except OSError as e:
        # Past the switch every state verifies; the next prune (or backup, or the reaper) finishes it.
        raise RepositoryError(
            f"Backup {point.pk} was merged but could not be made a full yet ({e.strerror or e}); its chain is kept "
            "and the next prune finishes it."
        ) from None
    point.refresh_from_db()
    return point


def build_full(point: BackupPoint, *, beat=None) -> Manifest:
    """Write the point's incremental disks as standalone images into its staging directory,
    verified; returns its manifest with their checksums as `merged_checksum`. The point is untouched."""
    from repository.verify import chain_problem, point_problems

    manifest = point.manifest()
    # A damaged file would be copied into a new full with a fresh checksum: the damage laundered.
    problems = point_problems(point) + [
        p for d in manifest.disks if (p := chain_problem(point, d.disk_id, parents_only=True))
    ]
    if problems:
        raise RepositoryError(f"Backup {point.pk} cannot become a full: {problems[0]} Its chain is kept as it is.")
    source = point.directory.path
    stage = staging_dir(point)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    for entry in manifest.disks:
        if not entry.parent_file:
            continue  # already standalone (a disk added since the parent)
        original, merged = source / entry.file, stage / entry.file
        _qemu_img("convert", "-f", "qcow2", "-O", "qcow2", "-U", str(original), str(merged), beat=beat)
        _qemu_img("compare", "-f", "qcow2", "-F", "qcow2", "-U", str(original), str(merged), beat=beat)
        _qemu_img("check", "-f", "qcow2", "-U", str(merged), ok=(0, 3), beat=beat)
        fsync_file(merged)
        entry.merged_checksum = checksum_file(open(merged, "rb"))  # noqa: SIM115 (closed by checksum_file)
    fsync_dir(stage)
    return manifest


def record_merged(point: BackupPoint, manifest: Manifest) -> None:
    """Before the switch: the database records each merged image's checksum, so that a manifest naming
    it is held to the database like any other (one naming a checksum the rows do not know is damaged,
    not trusted: anyone can write a manifest and its own checksum)."""
    with transaction.atomic():
        for record in DiskBackup.objects.filter(point=point).select_related("disk"):
            entry = manifest.disk(str(record.disk.engine_id))
            merged = entry.merged_checksum if entry is not None and entry.merged_checksum else ""
            if record.merged_checksum != merged:
                record.merged_checksum = merged
                record.save(update_fields=["merged_checksum"])


def name_merged(point: BackupPoint, manifest: Manifest) -> None:
    """The switch: the manifest names the merged images' checksums beside the layers' own."""
    manifest.write(point.directory.path)


def complete_consolidation(point: BackupPoint) -> None:
    """Steps 3 to 5, from wherever a killed process left them."""
    replace_images(point)
    write_full_manifest(point)
    record_full(point)
    shutil.rmtree(staging_dir(point), ignore_errors=True)
    fsync_dir(point.directory.path)


def replace_images(point: BackupPoint, *, check: bool = False) -> None:
    """Rename each staged merged image over its layer (a rename of a file: atomic on a network share
    too). With `check` (finishing what a killed process left), a staged image is renamed only if it
    still matches its checksum, and a disk none of whose two images is in place stays a layer."""
    from repository.verify import file_problem

    directory, stage = point.directory.path, staging_dir(point)
    manifest = point.manifest()
    changed = False
    for entry in manifest.disks:
        if not entry.merged_checksum:
            continue
        staged, final = stage / entry.file, directory / entry.file
        if staged.exists() and (not check or not file_problem(staged, entry.merged_checksum)):
            os.replace(staged, final)
            continue
        if check and file_problem(final, entry.merged_checksum):
            entry.merged_checksum = None  # its merged image is gone or damaged: this disk stays a layer
            changed = True
    fsync_dir(directory)
    if changed:
        manifest.write(directory)


def write_full_manifest(point: BackupPoint) -> None:
    """The manifest names the merged images only; with no layer left, the point is a full."""
    directory = point.directory.path
    manifest = point.manifest()
    if not any(entry.merged_checksum for entry in manifest.disks):
        return
    for entry in manifest.disks:
        if entry.merged_checksum:
            entry.checksum, entry.merged_checksum, entry.parent_file = entry.merged_checksum, None, None
            entry.stored_size = (directory / entry.file).stat().st_blocks * 512
    if not any(entry.parent_file for entry in manifest.disks):
        manifest.type = BackupPoint.Type.FULL
        manifest.parent_backup_id = None
    manifest.write(directory)


def record_full(point: BackupPoint) -> None:
    """The rows follow the point's manifest: its standalone disks lose their parent; a point with
    no layer left is a full."""
    manifest = point.manifest()
    with transaction.atomic():
        stored = 0
        for record in DiskBackup.objects.filter(point=point).select_related("disk"):
            entry = manifest.disk(str(record.disk.engine_id))
            if entry is None:
                continue
            if not entry.parent_file:
                record.parent = None
            if entry.checksum in (record.checksum, record.merged_checksum):
                # Only a checksum the rows knew: the manifest's word alone changes nothing recorded.
                record.checksum = entry.checksum
            record.merged_checksum = ""
            record.stored_size = entry.stored_size
            record.save(update_fields=["parent", "checksum", "merged_checksum", "stored_size"])
            stored += entry.stored_size
        if manifest.type != BackupPoint.Type.FULL:
            BackupPoint.objects.filter(pk=point.pk).update(bytes_stored=stored)
            return
        note = f"Consolidated on {timezone.now():%Y-%m-%d %H:%M}: what it was built on was merged into it."
        BackupPoint.objects.filter(pk=point.pk).update(
            type=BackupPoint.Type.FULL,
            parent=None,
            bytes_stored=stored,
            note=f"{point.note}\n{note}".strip(),
        )


def finish_consolidation(point: BackupPoint) -> None:
    """Finish a consolidation a killed process left past its switch, or roll back one it left before."""
    stage = staging_dir(point)
    legacy = _legacy_staging(point)  # a staging directory beside the point, from before version 2 of this
    if not stage.exists() and not legacy.exists() and point.type == BackupPoint.Type.FULL:
        return
    try:
        manifest = point.manifest()
    except RepositoryError:
        manifest = None
    if manifest is not None and any(entry.merged_checksum for entry in manifest.disks):
        replace_images(point, check=True)  # past the switch: forward
        write_full_manifest(point)
        manifest = point.manifest()
    if manifest is not None and manifest.type == BackupPoint.Type.FULL and point.type != BackupPoint.Type.FULL:
        record_full(point)  # the manifest says full, the rows not yet
    if manifest is not None and not any(entry.merged_checksum for entry in manifest.disks):
        DiskBackup.objects.filter(point=point).exclude(merged_checksum="").update(merged_checksum="")
    shutil.rmtree(stage, ignore_errors=True)  # before the switch: an unfinished merge
    shutil.rmtree(legacy, ignore_errors=True)  # the old incremental, exchanged aside


def finish_consolidations(points, *, job=None) -> list[str]:
    """Finish or roll back what a killed prune left in the directories of these points' VMs.

    Each point is claimed EXCLUSIVE first, as every writer of a chain claims what it rewrites: a
    restore or verify on another node may be reading it (every reader of a point built on it claims
    it too), or a prune there may be merging it right now. Such a point is left as it is, and its
    claim's holder said in the list returned; the next prune, backup or reaper finishes it."""
    from repository.claims import EXCLUSIVE, KEPT, PointBusy, claim_points

    busy = []
    places = set(points.values_list("destination__path", "vm__engine_id"))
    for root, vm_id in places:
        vm_dir = Path(root, str(vm_id))
        stages = {s.name[1 : -len(".merge")]: s for s in vm_dir.glob(".*.merge")}
        stages |= {s.parent.name: s for s in vm_dir.glob(f"*/{STAGING}")}
        for uuid, stage in stages.items():
            point = BackupPoint.objects.select_related("vm", "destination").filter(uuid=uuid).first()
            if point is None or point.status not in KEPT:
                shutil.rmtree(stage, ignore_errors=True)  # its point is gone: nobody reads what it staged
                continue
            try:
                with claim_points([point], mode=EXCLUSIVE, doing="consolidated", job=job):
                    point.refresh_from_db()
                    finish_consolidation(point)
            except PointBusy as e:
                if e.gone:
                    shutil.rmtree(stage, ignore_errors=True)
                else:
                    busy.append(e.what)
    return busy


def clean_staging(*, destination, vm, job=None) -> None:
    """Before a backup of a VM: finish or remove what a consolidation of its points left, unless a
    prune is at work on them right now (it cleans up after itself) or a reader holds them."""
    from repository.retention import chain_lock

    vm_dir = Path(destination.path, str(vm.engine_id))
    if not any(vm_dir.glob(".*.merge")) and not any(vm_dir.glob(f"*/{STAGING}")):
        return
    sample = BackupPoint.objects.select_related("vm", "destination").filter(vm=vm, destination=destination).first()
    with chain_lock(sample, wait=False) as held:
        if held:
            with contextlib.suppress(RepositoryError, OSError):  # the backup goes on; the next prune retries
                finish_consolidations(BackupPoint.objects.kept().filter(vm=vm, destination=destination), job=job)


def _filled_up(error: BaseException, directory: Path) -> bool:
    """Whether a failed merge ran out of room: what failed rarely says so plainly (qemu-img words
    it its own way), so the room left is asked too, before the staged files are removed."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(error, RepositoryError):
        return False
    try:
        return os.strerror(errno.ENOSPC) in str(error) or free_bytes(directory) < MiB
    except OSError:
        return False


def _legacy_staging(point: BackupPoint) -> Path:
    path = point.directory.path
    return path.with_name(f".{path.name}.merge")


def _qemu_img(*args: str, ok: tuple[int, ...] = (0,), beat=None) -> None:
    with subprocess.Popen(["qemu-img", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=10)
                break
            except subprocess.TimeoutExpired:
                if beat is not None:
                    beat()
    if proc.returncode not in ok:
        detail = (stderr or stdout).strip().splitlines()
        raise RepositoryError(f"qemu-img {args[0]} failed: {detail[-1] if detail else proc.returncode}")
