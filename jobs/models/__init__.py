"""The jobs app's models, one module each: jobs (and their events and slots), worker nodes, announced
snapshot removals."""

from jobs.errors import IllegalTransition, SlotTaken
from jobs.models.job import Job, JobEvent, JobSlot, Slot
from jobs.models.node import Node
from jobs.models.snapshot_removal import SnapshotRemoval

__all__ = ["IllegalTransition", "Job", "JobEvent", "JobSlot", "Node", "Slot", "SlotTaken", "SnapshotRemoval"]
