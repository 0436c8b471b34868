"""Integrity of stored backups: every file against its manifest, QCOW2 structure, chains.

Used by the verify job (on demand: `manage.py verify`, the API, the backups page) and by every
restore, which checks the files it will read before it makes anything on the engine.
"""

import json
import subprocess
from contextlib import ExitStack
from pathlib import Path

from django.utils import timezone

from jobs.errors import JobError
from jobs.models import Job
from jobs.runner import enqueue
from repository import signals
from repository.claims import READ, PointBusy, chain_of, claim_points
from repository.models import BackupPoint
from repository.retention import chain_lock
from repository.storage import RepositoryError, checksum_file


def file_problem(path: Path, expected: str) -> str:
    """What is wrong with a stored file against its recorded checksum ("" when nothing)."""
    if not path.exists():
        return f"{path} is missing."
    algorithm = expected.split(":", 1)[0] if ":" in expected else ""
    try:
        found = checksum_file(open(path, "rb"), algorithm)  # noqa: SIM115 (closed by checksum_file)
    except RepositoryError:
        return f"{path} has no usable checksum in its manifest ({expected!r})."
    if found != expected:
        return f"{path} does not match its checksum: expected {expected}, found {found}."
    return ""


def chain_files(point: BackupPoint, disk_id: str) -> list[tuple[Path, str]]:
    """The files a disk of this point is read from, newest first, with their recorded checksums:
    its own image and, for an incremental, each parent's, as the manifests link them."""
    files, current, wanted = [], point, None
    while True:
        entry = current.manifest().disk(disk_id)
        if entry is None:
            raise RepositoryError(
                f"Backup {current.pk} has no disk {disk_id}: the chain of backup {point.pk} is broken."
            )
        path = current.directory.path / entry.file
        if wanted is not None and path.resolve() != wanted.resolve():
            raise RepositoryError(f"The chain of backup {point.pk} is broken: {wanted} is not in backup {current.pk}.")
        files.append((path, entry.checksum))
        if not entry.parent_file:
            return files
        wanted = current.directory.path / entry.parent_file
        if current.parent is None:
            raise RepositoryError(f"The chain of backup {point.pk} is broken: backup {current.pk} has no parent.")
        current = current.parent


def chain_problem(point: BackupPoint, disk_id: str, *, parents_only: bool = False) -> str:
    """What is wrong with the files a disk of this point is read from ("" when nothing); with
    `parents_only`, of its parents' files (the caller checked the point's own)."""
    try:
        for path, expected in chain_files(point, disk_id)[1 if parents_only else 0 :]:
            problem = file_problem(path, expected)
            if problem:
                return problem
    except RepositoryError as e:
        return str(e)
    return ""


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


def point_problems(point: BackupPoint) -> list[str]:
    """Everything wrong with a stored point: manifest, files, checksums, images, chain."""
    try:
        manifest = point.manifest()
    except RepositoryError as e:
        return [str(e)]
    problems = []
    directory = point.directory.path
    if not (directory / manifest.ovf).exists():
        problems.append(f"{directory / manifest.ovf} is missing.")
    for entry in manifest.disks:
        path = directory / entry.file
        problem = file_problem(path, entry.checksum)
        if not problem and entry.format == "qcow2":
            problem = qcow2_problem(path, entry.parent_file)
        if not problem and entry.parent_file:
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


def request_verify(*, origin: str, points: list[BackupPoint] | None = None, owner=None, policy=None) -> Job:
    """Queue a verify job of these points, or of every complete or damaged one."""
    ids = [p.pk for p in points] if points is not None else None
    name = f"backup {ids[0]}" if ids and len(ids) == 1 else f"{len(ids)} backups" if ids else "every backup"
    job = Job.objects.create(
        kind=Job.Kind.VERIFY, origin=origin, owner=owner, policy=policy, name=name, params={"points": ids}
    )
    return enqueue(job)


def run_verify(*, job: Job) -> dict:
    wanted = job.params.get("points")
    points = BackupPoint.objects.kept()
    if wanted is not None:
        points = points.filter(pk__in=wanted)
    points = list(points.select_related("vm", "destination", "parent").order_by("started"))
    if wanted is not None and len(points) < len(wanted):
        missing = sorted(set(wanted) - {p.pk for p in points})
        job.log("warning", f"Not verified (gone, failed or still running): backup {', '.join(map(str, missing))}")
    total = sum(p.bytes_stored for p in points)
    job.set_progress(0, total)
    done, damaged = 0, {}
    for point in points:
        job.check_cancel()
        # Under the lock a prune takes: a chain being merged or deleted is read before or after, never
        # half-way (it would look damaged), and a point the prune removed meanwhile is let be.
        # The claim keeps a deletion (from any node) off the chain while it is read; a chain being
        # deleted now is not read at all.
        with chain_lock(point), ExitStack() as claim:
            try:
                claim.enter_context(claim_points(chain_of(point), mode=READ, doing="read", job=job))
            except PointBusy as e:
                job.log("info", f"Backup {point.pk} of {point.vm.name} was not verified: {e.what}")
                continue
            kept = BackupPoint.objects.kept().filter(pk=point.pk)
            problems = point_problems(point) if kept.exists() else None
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
    return {"verified": len(points)}
