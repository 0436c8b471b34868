"""The job kinds the apps above register: what runs a kind's jobs, and the slots a job needs.

A slot is a limited resource a running job holds (a host, a storage domain, an engine, a policy's
parallel VMs, a node): {"key": "host:12", "limit": 3, "label": "jobs already run on host h1"}, the
label completing "<limit> ..." when the slot is full. The app that knows the resource declares it;
the jobs app only counts the running jobs holding each key as it claims a job (Job.start).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from jobs.models import Job

SlotsOf = Callable[["Job"], list[dict]]


@dataclass(frozen=True)
class Handler:
    """What runs jobs of one kind, as the app owning that kind declares it in its AppConfig.ready()."""

    kind: str
    run: Callable[..., dict | None]  # run(*, job) -> result
    # What people call a job of this kind ("Inventory sync"), on pages, alerts and in logs.
    label: str = ""
    # Moves disk data between the engine and a destination: holds a slot of the node it runs on, and
    # its end hands out the jobs put aside for a slot.
    moves_data: bool = False
    # Undoes, on this node, what a job of this kind left when its worker died (files, processes);
    # what it made on the engine is undone from the job's recorded engine objects in any case.
    on_abandoned: Callable[["Job"], None] | None = None
    # The slots a job of this kind needs to run (the engine, host and storage domains it works on).
    slots: SlotsOf | None = None
    # A running job of this kind reads its VM's volumes: our snapshot removals of that VM wait for it
    # (jobs.snapshot_removals), as a merge would change the chain under it.
    reads_vm_disks: bool = False


HANDLERS: dict[str, Handler] = {}
# Slots declared for jobs of any kind by an app that is not the kind's owner (a policy's parallel VMs
# for the backups it queued): each returns [] for the jobs it does not limit.
SLOT_PROVIDERS: list[SlotsOf] = []


def register_handler(
    kind: str,
    run: Callable[..., dict | None],
    *,
    moves_data: bool = False,
    on_abandoned: Callable[["Job"], None] | None = None,
    slots: SlotsOf | None = None,
    label: str = "",
    reads_vm_disks: bool = False,
) -> None:
    HANDLERS[kind] = Handler(
        kind,
        run,
        label=label,
        moves_data=moves_data,
        on_abandoned=on_abandoned,
        slots=slots,
        reads_vm_disks=reads_vm_disks,
    )


def kind_label(kind: str) -> str:
    """The label its app registered for the kind; the kind in words for one no app here registers."""
    handler = HANDLERS.get(kind)
    return handler.label if handler is not None and handler.label else kind.replace("_", " ").capitalize()


def kind_choices() -> list[tuple[str, str]]:
    """(kind, label) of every registered kind, by label: the kind filters of pages and the API."""
    return sorted(((h.kind, kind_label(h.kind)) for h in HANDLERS.values()), key=lambda choice: choice[1])


def register_slots(provider: SlotsOf) -> None:
    """Add slots to the jobs `provider` limits, whatever their kind."""
    if provider not in SLOT_PROVIDERS:
        SLOT_PROVIDERS.append(provider)


def data_kinds() -> list[str]:
    return [h.kind for h in HANDLERS.values() if h.moves_data]


def vm_disk_reading_kinds() -> list[str]:
    return [h.kind for h in HANDLERS.values() if h.reads_vm_disks]


def slots_for(job: "Job", *, node: str = "") -> list[dict]:
    """Every slot the job needs to run on `node` (by default this one)."""
    handler = HANDLERS.get(job.kind)
    if handler is None:
        return []
    slots = list(handler.slots(job)) if handler.slots else []
    for provider in SLOT_PROVIDERS:
        slots += provider(job)
    if handler.moves_data:
        node = node or settings.NODE_NAME
        workers = settings.Q_CLUSTER["workers"]
        slots.append({"key": f"node:{node}", "limit": workers, "label": f"jobs already run on node {node}"})
    return slots
