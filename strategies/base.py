"""The contract every backup strategy implements, and the registry of implementations."""

from dataclasses import dataclass, field

import ovirtsdk4.types as types

from inventory.models import VM
from jobs.runner import JobError
from repository.models import BackupDestination, BackupPoint

REGISTRY: dict[str, type["Strategy"]] = {}


def register(cls: type["Strategy"]) -> type["Strategy"]:
    REGISTRY[cls.name] = cls
    return cls


def get_strategy(name: str) -> type["Strategy"]:
    from strategies import STRATEGIES

    if name not in REGISTRY:
        if name in STRATEGIES:
            raise LookupError(f"The {STRATEGIES[name].label} strategy is not available in this version yet.")
        raise LookupError(f"Unknown strategy {name!r}.")
    return REGISTRY[name]


@dataclass
class BackupRequest:
    """What a backup job asks for, resolved from its parameters and policy."""

    vm: VM
    destination: BackupDestination
    type: str  # "full", "incremental" or "auto"
    quiesce: bool = True
    keep_snapshot: bool = True  # for the next incremental
    excluded: set[str] = field(default_factory=set)  # disk ids or aliases
    policy: object = None


class Strategy:
    """One way of moving a VM's data into a backup point.

    `backup()` creates and completes a BackupPoint, using the shared engine helpers in
    strategies.engine, and leaves nothing on the engine but what the next incremental needs.
    """

    name: str = ""
    supports_incremental: bool = False

    def __init__(self, *, job, connection, request: BackupRequest):
        self.job = job
        self.connection = connection
        self.request = request

    def backup(self) -> BackupPoint:
        raise NotImplementedError

    def take_snapshot(self, *, description: str) -> tuple[types.Snapshot, str]:
        """The VM's snapshot, between the policy's pre and post snapshot commands (in the guest).

        A failing pre command stops the backup before anything exists on the engine. The post
        command runs whenever the snapshot was attempted, failed or not, as it usually undoes what
        the pre command did; its failure is a warning, since the snapshot is good.
        """
        from strategies.engine import create_snapshot
        from strategies.guest import run_guest_command

        req, job = self.request, self.job
        pre = req.policy.pre_snapshot_command.strip() if req.policy else ""
        post = req.policy.post_snapshot_command.strip() if req.policy else ""
        if pre:
            run_guest_command(vm=req.vm, policy=req.policy, command=pre, phase="pre-snapshot", job=job)
        try:
            snapshot, consistency = create_snapshot(
                self.connection, str(req.vm.engine_id), description=description, quiesce=req.quiesce, job=job
            )
            job.log("info", f"Snapshot {snapshot.id} taken ({consistency}-consistent)")
            return snapshot, consistency
        finally:
            if post:
                try:
                    run_guest_command(vm=req.vm, policy=req.policy, command=post, phase="post-snapshot", job=job)
                except JobError as e:
                    job.log("warning", f"{e} Check the guest: the backup goes on.")
