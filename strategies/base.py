"""The contract every backup strategy implements, and the registry of implementations."""

from dataclasses import dataclass, field

from inventory.models import VM
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
