"""Where the files of a destination are, and so where the jobs that read or write them run.

A shared destination (no node) is mounted at the same path on every node: its jobs run on any node
(a backup's and a restore's on one serving the VM's cluster). A destination local to a node is that
node's own directory: its backups, restores, verifies and prunes run there alone, and the web process,
on another machine, checks its directory through a job on that node (a destination check).

A verify or prune whose points lie in several places is one job per place, each run where its points
are: "" for the shared destinations, or the node the destinations are local to (the job's `local_to`).
"""

import shutil

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from jobs.errors import JobError
from jobs.models import Job
from jobs.placement import ANYWHERE, Placement
from jobs.runner import enqueue
from repository.models import BackupDestination
from repository.validators import resolved

DESTINATION_CHECK = "destination_check"


def places(points) -> list[str]:
    """Where these points' files are: "" for shared destinations, then the nodes holding local ones."""
    nodes = points.order_by().values_list("destination__node", flat=True).distinct()
    return sorted({node or "" for node in nodes})


def place_of(destination: BackupDestination) -> str:
    return destination.node_id or ""


def in_place(destinations, place: str):
    """The destinations of one place: the shared ones (""), or those local to that node."""
    return destinations.filter(node=place) if place else destinations.filter(node=None)


def place_words(place: str) -> str:
    return f"on destinations local to node {place}" if place else "on shared destinations"


def local_to_placement(job: Job) -> Placement:
    """A verify's or a prune's: on the node its destinations are local to (`local_to`), else anywhere."""
    node = job.params.get("local_to")
    if not node:
        return ANYWHERE
    names = ", ".join(BackupDestination.objects.filter(node=node).values_list("name", flat=True)) or "none now"
    return Placement(node=node, says=f"holds the destinations local to node {node} ({names})")


def destination_placement(job: Job) -> Placement:
    """A backup's: on the node its destination is local to. The job says in `local_to` whether it is
    (backup_params), so that handing out a policy run's thousands of backups to a shared destination
    reads no destination."""
    if not job.params.get("local_to"):
        return ANYWHERE
    destination = BackupDestination.objects.filter(pk=job.params.get("destination")).first()
    return destination.placement() if destination is not None else ANYWHERE


def point_placement(point_id) -> Placement:
    """A job reading one point (a restore): on the node its destination is local to."""
    destination = BackupDestination.objects.filter(points=point_id).first()
    return destination.placement() if destination is not None else ANYWHERE


# ----- the check of a directory on its node ---------------------------------------------------


def read_usage(destination: BackupDestination, *, origin: str, owner=None) -> Job | None:
    """After a destination is saved: its space read here, or, for another node's directory, a check
    of it queued on that node (returned)."""
    if destination.reachable_here():
        destination.refresh_usage()
        return None
    return request_destination_check(destination, origin=origin, owner=owner)


def request_destination_check(destination: BackupDestination, *, origin: str, owner=None) -> Job:
    """Queue the check of a destination's directory on the node it is local to (the web process,
    elsewhere, cannot read it): what it finds is recorded on the destination."""
    job = Job.objects.create(
        kind=DESTINATION_CHECK,
        origin=origin,
        owner=owner,
        name=destination.name,
        params={"destination": destination.pk, "path": destination.path, "node": destination.node_id or ""},
    )
    return enqueue(job)


def destination_check_placement(job: Job) -> Placement:
    destination = BackupDestination.objects.filter(pk=job.params.get("destination")).first()
    if destination is None:
        return ANYWHERE  # it fails at once, saying so
    return destination.placement()


def run_destination_check(*, job: Job) -> dict:
    destination = BackupDestination.objects.filter(pk=job.params["destination"]).first()
    if destination is None:
        raise JobError("The destination to check was removed.")
    if (destination.path, place_of(destination)) != (job.params["path"], job.params["node"]):
        job.log("info", f"Destination {destination.name} was changed since: the check queued then does it.")
        return {"checked": False}
    if not destination.reachable_here():
        raise JobError(f"This is node {settings.NODE_NAME}: destination {destination.name} is {destination.location}.")
    problem = record_check(destination)
    if problem:
        raise JobError(problem)
    destination.refresh_from_db()
    job.log("info", f"{destination.path} is a writable directory on node {destination.node_id}")
    return {"checked": True, "capacity_bytes": destination.capacity_bytes, "free_bytes": destination.free_bytes}


def record_check(destination: BackupDestination) -> str:
    """Check the destination's directory here, on its node, as the form does where it can: an
    existing, writable directory under BACKUP_ROOTS, and no other destination's directory. Records
    on the row where the path leads, its capacity and free space, or what is wrong (check_error).
    Returns what is wrong ("" when nothing)."""
    row = BackupDestination.objects.filter(pk=destination.pk, path=destination.path, node=destination.node_id)
    try:
        destination.validate_directory()
        real = str(resolved(destination.path))
        same = BackupDestination.objects.filter(real_path=real, shared_before_check=False)
        other = same.exclude(pk=destination.pk).filter(models.Q(node=None) | models.Q(node=destination.node_id))
        if (taken := other.first()) is not None:
            raise ValidationError(
                f"{destination.path} leads to {real}, the directory of destination {taken.name}: one destination "
                "per directory. Use that destination, or another directory."
            )
        usage = shutil.disk_usage(real)
        try:
            with transaction.atomic():
                row.update(
                    real_path=real,
                    capacity_bytes=usage.total,
                    free_bytes=usage.free,
                    checked=timezone.now(),
                    check_error="",
                )
        except IntegrityError:  # another destination took that directory this instant
            raise ValidationError(f"{real} became another destination's directory meanwhile: check again.") from None
    except ValidationError as e:
        problem = f"Checked on node {destination.node_id}: {' '.join(e.messages)}"
        row.update(check_error=problem)
        return problem
    return ""
