"""The backup workflow: resolve what a backup job asks for, connect, run the strategy."""

from collections.abc import Callable

from django.conf import settings

from inventory.models import VM
from inventory.slots import vm_slots
from jobs.errors import AlreadyActive, JobError
from jobs.models import Job
from jobs.nodes import wrote_here_or_lost
from jobs.placement import Placement
from jobs.runner import enqueue
from jobs.tasks import stop_processes_using
from ovirt.connection import connect
from repository.models import BackupDestination, BackupPoint
from repository.places import destination_placement
from repository.retention import request_prune
from strategies.base import BackupRequest
from strategies.registry import all_strategies, check_options, default_strategy_name, get_strategy, refusal

# The kind of job this app registers (jobs.kinds).
BACKUP = "backup"


class NoDestination(ValueError):
    """A backup asked for without a destination, of a VM no enabled policy covers."""


def backup_key(vm_id: int) -> str:
    """What two active backups never share (Job.exclusive): overlapping backups of one VM would race
    for its snapshots."""
    return f"backup:vm:{vm_id}"


# Which policy covers a VM, as the policies app decides it (registered in its AppConfig.ready():
# policies sit above strategies, so the backup workflow cannot import their coverage rules).
_policy_finder: Callable[[VM], object] | None = None


def register_policy_finder(find: Callable[[VM], object]) -> None:
    global _policy_finder
    _policy_finder = find


def covering_policy(vm: VM):
    """The enabled policy that covers this VM (explicitly or by its rules), or None."""
    return _policy_finder(vm) if _policy_finder is not None else None


def backup_params(
    *, strategy: str, type: str, destination: BackupDestination, exclude=None, full_reason="", options=None
) -> dict:
    """A backup job's parameters (what a worker resolves in run_backup)."""
    params = {"strategy": strategy, "type": type, "destination": destination.pk, "exclude": exclude or []}
    if destination.node_id:
        params["local_to"] = destination.node_id  # it runs there (repository.places.destination_placement)
    if full_reason:
        params["full_reason"] = full_reason
    if options:
        params["options"] = options
    return params


def request_backup(
    *,
    vm: VM,
    origin: str,
    owner=None,
    strategy: str | None = None,
    type: str = "auto",
    destination: BackupDestination | None = None,
    policy=None,
    exclude: list[str] | None = None,
    options: dict | None = None,
) -> Job:
    """Queue a backup job for a VM. Raises ValueError with a message for people on bad input
    (AlreadyActive when a backup of the VM is queued or running, NoDestination when no destination is
    named and no policy covers the VM)."""
    policy = policy or covering_policy(vm)
    destination = destination or (policy.destination if policy else None)
    if destination is None:
        raise NoDestination(f"VM {vm.name} has no policy: name a destination for this backup.")
    if type not in ("auto", "full", "incremental"):
        raise ValueError("type must be full, incremental or auto.")
    strategy = strategy or (policy.strategy if policy else default_strategy_name())
    if options is None and policy is not None and strategy == policy.strategy:
        options = policy.strategy_options  # none asked for: the policy's, with the policy's strategy
    refused = refusal(strategy, vm)
    if refused:
        raise ValueError(refused)
    # Checked against the strategy's declared options: one it lacks (another strategy's, or none's)
    # is refused naming the options it has.
    options = check_options(strategy, options)
    params = backup_params(strategy=strategy, type=type, destination=destination, exclude=exclude, options=options)
    try:
        job, created = Job.objects.create_unless_active(
            exclusive=backup_key(vm.pk),
            kind=BACKUP,
            vm=vm,
            manager=vm.manager,
            started_by=policy,
            owner=owner,
            origin=origin,
            name=vm.name,
            params=params,
        )
    except JobError as e:
        raise ValueError(str(e)) from None
    if not created:
        raise AlreadyActive(f"A backup of {vm.name} is already {job.status} (job {job.pk}).", job)
    return enqueue(job)


def run_backup(*, job: Job) -> dict:
    if job.vm is None:
        raise JobError("The VM of this backup job was removed from the inventory.")
    params = job.params
    try:
        destination = BackupDestination.objects.get(pk=params["destination"])
    except BackupDestination.DoesNotExist:
        raise JobError("The destination of this backup was removed.") from None
    if not destination.enabled:
        raise JobError(f"Destination {destination.name} is disabled.")
    destination.checked_path()  # refused before anything is done on the engine; checked again at each write
    policy = job.started_by  # a backup is started by the policy whose settings it runs under, or nothing
    excluded = set(params.get("exclude") or []) | set(policy.excluded_disks if policy else [])
    keep = policy.incremental if policy else True
    kind = params.get("type", "auto")
    full_reason = params.get("full_reason", "")
    if policy and not policy.incremental and kind == "auto":
        kind = "full"
    elif policy and not policy.incremental and kind == "incremental":
        # The real reason: the policy keeps no snapshot or checkpoint to build on (full_every_days=0
        # means every backup is full), whether or not the VM has an earlier backup.
        kind = "full"
        full_reason = (
            f"Full backup instead of incremental: policy {policy.name} takes full backups only "
            "(full every 0 days), so nothing is kept on the engine for an incremental to build on."
        )  # the strategy notes it on the point and in the job's log
    request = BackupRequest(
        vm=job.vm,
        destination=destination,
        type=kind,
        quiesce=policy.quiesce if policy else True,
        keep_base=keep,
        excluded=excluded,
        policy=policy,
        full_reason=full_reason,
        options=params.get("options") or {},
    )
    try:
        strategy_cls = get_strategy(params.get("strategy") or default_strategy_name())
    except LookupError as e:
        raise JobError(str(e)) from None
    with connect(job.vm.manager) as connection:
        point = strategy_cls(job=job, connection=connection, request=request).backup()
    if policy is not None:
        # Retention of this VM's chains runs after every backup the policy makes, as its own job.
        try:
            prune = request_prune(policy=policy, origin=job.origin, vm=job.vm, owner=job.owner, group=job.group)
            job.log("info", f"Retention of policy {policy.name} for {job.vm.name} queued (job {prune.pk})")
        except ValueError as e:
            job.log("warning", f"Retention of policy {policy.name} not run: {e}")
    return {
        "point": point.pk,
        "type": point.type,
        "consistency": point.consistency,
        "bytes_read": point.bytes_transferred,
        "bytes_stored": point.bytes_stored,
        "note": point.note,
    }


def abandon_backup(job: Job) -> None:
    """A backup whose worker died: its unfinished point is removed (no manifest, so it never was a
    backup), after stopping what this node's dead worker left writing into it; then its strategy
    undoes what else it left that only a node can (Strategy.abandon: the SSH transfer's LVs on hosts)."""
    writer_gone = wrote_here_or_lost(job)
    for point in BackupPoint.objects.filter(job=job, status=BackupPoint.Status.RUNNING).select_related("destination"):
        if job.node == settings.NODE_NAME:
            stop_processes_using(point.directory.path, job=job)
        if writer_gone and point.destination.reachable_here():
            point.discard()
        else:
            # Its node's own directory (a destination local to it) is reached from there alone.
            where = point.directory.path if point.destination.reachable_here() else f"on {point.destination.name}"
            job.add_to_error(f"Its unfinished point {where} is removed by {job.node}, which wrote it.")
    # A worker that died between completing its point and dropping the record of the snapshot (or
    # VM backup) the point keeps as its base: that base is the next incremental's, not a leftover.
    for point in BackupPoint.objects.filter(job=job, status=BackupPoint.Status.COMPLETE).exclude(base_id=""):
        job.forget_engine_object(point.base_id)
    strategy = all_strategies().get(job.params.get("strategy") or default_strategy_name())
    if strategy is None:
        # A strategy this version does not have: what it recorded on the engine is still undone, by
        # kind; a record of a kind nobody registered is reported by that undo.
        job.add_to_error(f"Its strategy {job.params.get('strategy')!r} is unknown to this version.")
        return
    strategy.abandon(job)


def backup_slots(job: Job) -> list[dict]:
    """What a backup holds while it runs: its VM's engine, host and storage domains, and what its
    strategy adds (a proxy VM's attachment places)."""
    try:
        strategy = get_strategy(job.params.get("strategy") or default_strategy_name())
    except LookupError:
        return vm_slots(job)  # refused when it runs, saying so
    return vm_slots(job) + (strategy.slots(job) if job.vm is not None else [])


def backup_placement(job: Job) -> Placement:
    """The backup's strategy says where it may run (by default a node serving the VM's cluster), on
    the node its destination is local to if it is."""
    strategy = get_strategy(job.params.get("strategy") or default_strategy_name())
    return strategy.placement(job).both(destination_placement(job))
