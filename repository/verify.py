"""Integrity of stored backups: every file against its manifest and the database, QCOW2
structure, chains, the OVF.

Used by the verify job (on demand: `manage.py verify`, the API, the backups page) and by every
restore, which checks that the chain it will read is whole before it makes anything on the engine,
and checks the files' checksums while their data moves (recovery.restore).

The database is what a point is held to. Its rows were written with the point, by the service,
and record each disk's file and checksum and the OVF's checksum; a manifest is a file on the
destination, and its own checksum tells damage, not an edit (anyone can compute it again). So the
manifest must agree with the rows, and each file with both; a disagreement is damage, named with
the file and both checksums. Files are read only in the point's own directory (the manifest names
plain file names, see repository.manifest) and never through a symbolic link.

Points written before the OVF's checksum was recorded have none in their row or manifest: their
OVF is reported as not checksummed (a warning, not damage) and is still refused when it is not a
safe, well-formed OVF (repository.ovf).
"""

import json
import subprocess
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack
from pathlib import Path

import blake3
from django.utils import timezone

from jobs.errors import JobError
from jobs.models import Job
from jobs.runner import enqueue
from repository import signals
from repository.claims import PointBusy, claim_chain
from repository.manifest import MANIFEST, Manifest, ManifestDisk
from repository.models import BackupDestination, BackupPoint, DiskBackup
from repository.ovf import MAX_BYTES, ovf_problem
from repository.places import in_place, place_words, places
from repository.retention import chain_lock
from repository.storage import DestinationRefused, RepositoryError, checksum_file, open_stored

# The kind of job this app registers (jobs.kinds): a check of backups against their manifests.
VERIFY = "verify"


def file_problem(path: Path, expected: str | tuple[str, ...]) -> str:
    """What is wrong with a stored file against its recorded checksum, or any of them during a
    consolidation ("" when nothing)."""
    accepted = (expected,) if isinstance(expected, str) else expected
    algorithm = accepted[0].split(":", 1)[0] if ":" in accepted[0] else ""
    try:
        stored = open_stored(path)
    except FileNotFoundError:
        return f"{path} is missing."
    except RepositoryError as e:
        return str(e)
    except OSError as e:
        return f"{path} cannot be read: {e.strerror or e}."
    try:
        found = checksum_file(stored, algorithm)
    except RepositoryError:
        return f"{path} has no usable checksum in its manifest ({accepted[0]!r})."
    if found not in accepted:
        return f"{path} does not match its checksum: expected {' or '.join(accepted)}, found {found}."
    return ""


def record_problem(point: BackupPoint, entry: ManifestDisk, record: DiskBackup | None) -> str:
    """Where a manifest's disk disagrees with the database's row of it ("" when nothing)."""
    path = point.directory.path / entry.file
    if record is None:
        return (
            f"The manifest of backup {point.pk} lists disk {entry.alias} ({entry.disk_id}) in {path}, which the "
            "database does not record for that backup."
        )
    if record.file != point.directory.relative(entry.file):
        return (
            f"The manifest of backup {point.pk} names {path} (checksum {entry.checksum}) for disk {entry.alias}; "
            f"the database records {record.file} in the destination (checksum {record.checksum or 'none'}): the "
            "manifest was changed after the backup was written."
        )
    # During a consolidation (repository.consolidate) the rows also know the merged image's checksum,
    # recorded before any manifest names it: the manifest may name it, as the layer's own or beside it.
    known = {record.checksum, record.merged_checksum} - {""}
    if entry.checksum not in known:
        return (
            f"{path} has checksum {entry.checksum} in its manifest, but the database records "
            f"{' or '.join(sorted(known)) or 'none'}: the manifest was changed after the backup was written."
        )
    if entry.merged_checksum and entry.merged_checksum != record.merged_checksum:
        return (
            f"{path} has a merged checksum {entry.merged_checksum} in its manifest, but the database records "
            f"{record.merged_checksum or 'none'}: the manifest was changed after the backup was written."
        )
    return ""


def _records(point: BackupPoint) -> dict[str, DiskBackup]:
    return {str(r.disk.engine_id): r for r in point.disks.select_related("disk")}


def manifest_problems(point: BackupPoint, manifest: Manifest) -> list[str]:
    """Where a point's manifest disagrees with the database's rows of the point: which backup it
    describes, its disks, their files and checksums, the OVF's."""
    where = point.directory.path / MANIFEST
    problems = []
    if manifest.backup_id != str(point.uuid) or manifest.vm_id != str(point.vm.engine_id):
        problems.append(
            f"{where} describes backup {manifest.backup_id} of VM {manifest.vm_id}, not this one "
            f"({point.uuid} of VM {point.vm.engine_id})."
        )
    records = _records(point)
    listed = {entry.disk_id for entry in manifest.disks}
    for disk_id, record in records.items():
        if disk_id not in listed:
            problems.append(f"{where} lists no disk {record.disk.name} ({disk_id}), which the database records.")
    problems += [p for entry in manifest.disks if (p := record_problem(point, entry, records.get(entry.disk_id)))]
    ovf = point.directory.path / manifest.ovf
    if point.ovf_path and point.ovf_path != point.directory.relative(manifest.ovf):
        problems.append(f"{where} names {ovf} as the OVF; the database records {point.ovf_path}.")
    elif point.ovf_checksum and manifest.ovf_checksum != point.ovf_checksum:
        problems.append(
            f"{ovf} has checksum {manifest.ovf_checksum or 'none'} in its manifest, but the database records "
            f"{point.ovf_checksum}: the manifest was changed after the backup was written."
        )
    return problems


def read_ovf(point: BackupPoint, manifest: Manifest, *, warn: Callable[[str], None] | None = None) -> str:
    """The point's OVF, once it is the one the backup wrote and fit to hand to an engine; else a
    RepositoryError naming what is wrong. Read once: the text checked is the text returned."""
    path = point.directory.path / manifest.ovf
    expected = point.ovf_checksum or manifest.ovf_checksum
    try:
        with open_stored(path) as stored:
            data = stored.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise RepositoryError(f"{path} is missing.") from None
    except OSError as e:
        raise RepositoryError(f"{path} cannot be read: {e.strerror or e}.") from None
    if expected:
        found = f"blake3:{blake3.blake3(data).hexdigest()}"
        if found != expected:
            raise RepositoryError(f"{path} does not match its checksum: expected {expected}, found {found}.")
    elif warn is not None:
        warn(
            f"{path}: OVF not checksummed (written by an older version); it is only checked for being a safe, "
            "well-formed OVF."
        )
    problem = ovf_problem(data)
    if problem:
        raise RepositoryError(f"{path} {problem}")
    return data.decode("utf-8")


def chain_formats(point: BackupPoint, disk_id: str) -> list[str]:
    """The stored format of each file of the disk's chain, newest first, as the manifests say (in
    the order chain_files gives the files)."""
    formats, current = [], point
    while current is not None:
        entry = current.manifest().disk(disk_id)
        formats.append(entry.format)
        if not entry.parent_file:
            break
        current = current.parent
    return formats


def chain_files(point: BackupPoint, disk_id: str) -> list[tuple[Path, tuple[str, ...]]]:
    """The files a disk of this point is read from, newest first, with the checksums each may have:
    its own image and, for an incremental, each parent's, as the manifests link them; each
    manifest's entry as the database records it."""
    files, current, wanted = [], point, None
    while True:
        entry = current.manifest().disk(disk_id)
        if entry is None:
            raise RepositoryError(
                f"Backup {current.pk} has no disk {disk_id}: the chain of backup {point.pk} is broken."
            )
        disagreement = record_problem(current, entry, current.disks.filter(disk__engine_id=disk_id).first())
        if disagreement:
            raise RepositoryError(disagreement)
        path = current.directory.path / entry.file
        if wanted is not None and path.resolve() != wanted.resolve():
            raise RepositoryError(f"The chain of backup {point.pk} is broken: {wanted} is not in backup {current.pk}.")
        files.append((path, entry.checksums))
        if not entry.parent_file:
            return files
        wanted = current.directory.path / entry.parent_file
        if current.parent is None:
            raise RepositoryError(f"The chain of backup {point.pk} is broken: backup {current.pk} has no parent.")
        current = current.parent


def awaited_problem(stored: Future, job: Job) -> str:
    """What files_problem, running beside a restore's copy (`stored`), found, once it is done: the job
    beats and may be cancelled while it waits (a long chain holds more than the copy reads)."""
    while True:
        try:
            return stored.result(timeout=5)
        except FutureTimeout:
            job.check_cancel()  # beats too


def files_problem(files: list[tuple[Path, tuple[str, ...]]]) -> str:
    """What is wrong with these files against their checksums ("" when nothing). Reads no database,
    so a restore can run it in a thread while the same files are uploaded."""
    for path, expected in files:
        problem = file_problem(path, expected)
        if problem:
            return problem
    return ""


def chain_problem(point: BackupPoint, disk_id: str, *, parents_only: bool = False) -> str:
    """What is wrong with the files a disk of this point is read from ("" when nothing); with
    `parents_only`, of its parents' files (the caller checked the point's own)."""
    try:
        return files_problem(chain_files(point, disk_id)[1 if parents_only else 0 :])
    except RepositoryError as e:
        return str(e)


def qcow2_problem(path: Path, backing: str | None) -> str:
    """`qemu-img check` of one image (leaked clusters are harmless), and its backing file as recorded."""
    check = subprocess.run(
        ["qemu-img", "check", "-U", "-f", "qcow2", "--output=json", str(path)], capture_output=True, text=True
    )
    if check.returncode not in (0, 3):  # 3: leaks only
        detail = (check.stderr or check.stdout).strip().splitlines()
        return f"{path} is not a sound QCOW2 image (qemu-img check: {detail[-1] if detail else check.returncode})."
    info = subprocess.run(
        ["qemu-img", "info", "-U", "-f", "qcow2", "--output=json", str(path)], capture_output=True, text=True
    )
    if info.returncode != 0:
        return f"{path} cannot be read by qemu-img: {info.stderr.strip()}"
    found = json.loads(info.stdout).get("backing-filename")
    if found != backing:
        return f"{path} has backing file {found!r}, its manifest says {backing!r}."
    return ""


def point_problems(point: BackupPoint, *, warn: Callable[[str], None] | None = None) -> list[str]:
    """Everything wrong with a stored point: manifest (against the database too), files, checksums,
    images, chain, OVF. `warn` hears what is worth saying but is no damage."""
    try:
        manifest = point.manifest()
    except RepositoryError as e:
        return [str(e)]
    problems = manifest_problems(point, manifest)
    if problems:
        return problems  # a manifest that is not the database's: its files are not held to it
    directory = point.directory.path
    try:
        read_ovf(point, manifest, warn=warn)
    except RepositoryError as e:
        problems.append(str(e))
    for entry in manifest.disks:
        path = directory / entry.file
        problem, backing = file_problem(path, entry.checksum), entry.parent_file
        if problem and entry.merged_checksum and not file_problem(path, entry.merged_checksum):
            problem, backing = "", None  # consolidated, the manifest not yet saying full: standalone
        if not problem and entry.format == "qcow2":
            problem = qcow2_problem(path, backing)
        if not problem and backing:
            try:
                chain_files(point, entry.disk_id)
            except RepositoryError as e:
                problem = str(e)
            else:
                parent = point.parent
                if parent.status != BackupPoint.Status.COMPLETE:
                    problem = f"{path} builds on backup {parent.pk}, which is {parent.status}."
        if problem:
            problems.append(problem)
    return problems


def _warner(job: Job, point: BackupPoint) -> Callable[[str], None]:
    return lambda warning: job.log("warning", f"Backup {point.pk} of {point.vm.name}: {warning}")


def request_verify(*, origin: str, points: list[BackupPoint] | None = None, owner=None, started_by=None) -> Job:
    """Queue a verify job of these points, or of every complete or damaged one; `started_by` is what
    asked for it, if not a person (a policy). Points in several places make one job each
    (request_verifies): the first is returned, its log naming the others."""
    return request_verifies(origin=origin, points=points, owner=owner, started_by=started_by)[0]


def request_verifies(*, origin: str, points: list[BackupPoint] | None = None, owner=None, started_by=None) -> list[Job]:
    """Queue the verify of these points (None: every complete or damaged one): one job per place
    their files are (repository.places), each on a node that can read them. One job cannot read
    them all when a destination is local to a node: no node reaches another node's directory."""
    ids = [p.pk for p in points] if points is not None else None
    if ids is None:
        where = {place: None for place in places(BackupPoint.objects.kept())} or {"": None}
    else:
        placed = dict(BackupPoint.objects.filter(pk__in=ids).values_list("pk", "destination__node"))
        where = {} if ids else {"": []}
        for pk in ids:  # a point gone meanwhile goes with the shared ones: its job says it is gone
            where.setdefault(placed.get(pk) or "", []).append(pk)
    jobs = []
    for place, chosen in sorted(where.items()):
        if chosen is None:
            name = "every backup"
        else:
            name = f"backup {chosen[0]}" if len(chosen) == 1 else f"{len(chosen)} backups"
        if len(where) > 1:
            name += f" {place_words(place)}"
        job = Job.objects.create(
            kind=VERIFY,
            origin=origin,
            owner=owner,
            started_by=started_by,
            name=name,
            params={"points": chosen, "local_to": place},
        )
        jobs.append(enqueue(job))
    for other in jobs[1:]:
        jobs[0].log(
            "info", f"The backups {place_words(other.params['local_to'])} are verified there, by job {other.pk}."
        )
    return jobs


def run_verify(*, job: Job) -> dict:
    wanted = job.params.get("points")
    points = BackupPoint.objects.kept()
    if wanted is not None:
        points = points.filter(pk__in=wanted)
    elif "local_to" in job.params:  # every backup of one place (without it: a job queued before places)
        points = points.filter(destination__in=in_place(BackupDestination.objects.all(), job.params["local_to"]))
    points = list(points.select_related("vm", "destination", "parent").order_by("started"))
    if wanted is not None and len(points) < len(wanted):
        missing = sorted(set(wanted) - {p.pk for p in points})
        job.log("warning", f"Not verified (gone, failed or still running): backup {', '.join(map(str, missing))}")
    total = sum(p.bytes_stored for p in points)
    job.set_progress(0, total)
    done, damaged, unreachable = 0, {}, {}
    for point in points:
        job.check_cancel()
        try:
            point.destination.checked_path()
        except DestinationRefused as e:
            # Out of reach (a share not mounted), not damaged: said, and the other points still verified.
            unreachable[point.pk] = str(e)
            job.log("error", f"Backup {point.pk} of {point.vm.name} was not verified: {e}")
            continue
        # Under the lock a prune takes: a chain being merged or deleted is read before or after, never
        # half-way (it would look damaged), and a point the prune removed meanwhile is let be.
        # The claim keeps a deletion (from any node) off the chain while it is read; a chain being
        # deleted now is not read at all.
        with chain_lock(point), ExitStack() as claim:
            try:
                claim.enter_context(claim_chain(point, job=job))
            except PointBusy as e:
                job.log("info", f"Backup {point.pk} of {point.vm.name} was not verified: {e.what}")
                continue
            kept = BackupPoint.objects.kept().filter(pk=point.pk)
            problems = point_problems(point, warn=_warner(job, point)) if kept.exists() else None
            now = timezone.now()
            if problems is None:
                job.log("info", f"Backup {point.pk} of {point.vm.name} was removed by retention meanwhile")
                continue
            if problems:
                marked = kept.update(status=BackupPoint.Status.DAMAGED, damage="\n".join(problems), verified=now)
            else:
                kept.update(status=BackupPoint.Status.COMPLETE, damage="", verified=now)
        if problems:
            damaged[point.pk] = problems
            if marked and point.status != BackupPoint.Status.DAMAGED:  # found now, not known before
                point.status = BackupPoint.Status.DAMAGED
                for receiver, error in signals.point_damaged.send_robust(
                    sender=BackupPoint, point=point, problems=problems
                ):
                    if isinstance(error, Exception):
                        job.log("warning", f"Telling {receiver.__module__} of damaged backup {point.pk}: {error}")
            for problem in problems:
                job.log("error", f"Backup {point.pk} of {point.vm.name} is damaged: {problem}")
        else:
            job.log("info", f"Backup {point.pk} of {point.vm.name} is sound")
        done += point.bytes_stored
        job.set_progress(done, total)
    if damaged:
        first = next(iter(damaged.items()))
        raise JobError(
            f"{len(damaged)} of {len(points)} backup(s) damaged (backup {first[0]}: {first[1][0]}); "
            "see the job's log for each. Damaged backups are kept, not restored, and not built on."
        )
    if unreachable:
        first = next(iter(unreachable.items()))
        raise JobError(
            f"{len(unreachable)} of {len(points)} backup(s) could not be verified, their destination out of "
            f"reach (backup {first[0]}: {first[1]}); the others are sound."
        )
    return {"verified": len(points)}
