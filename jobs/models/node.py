"""Worker nodes of the site (jobs.nodes says how they join, beat, drain and are lost)."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from jobs.models.job import Job


class NodeQuerySet(models.QuerySet):
    def online(self):
        return self.filter(status=Node.Status.ONLINE)

    def alive(self):
        """Online, with a heartbeat fresher than NODE_LOST_AFTER: what may be sent new jobs."""
        cutoff = timezone.now() - timezone.timedelta(seconds=settings.NODE_LOST_AFTER)
        return self.online().filter(heartbeat__gte=cutoff)

    def silent(self, now=None):
        """Online or draining nodes whose heartbeat stopped NODE_LOST_AFTER ago or more."""
        cutoff = (now or timezone.now()) - timezone.timedelta(seconds=settings.NODE_LOST_AFTER)
        return self.filter(status__in=[Node.Status.ONLINE, Node.Status.DRAINING], heartbeat__lt=cutoff)

    def load(self, names) -> dict[str, int]:
        """Jobs each node runs, or was sent and has not started, by node name (one query)."""
        from django.db.models import Count, Q

        rows = (
            Job.objects.filter(
                Q(status=Job.Status.RUNNING, node__in=names) | Q(status=Job.Status.QUEUED, sent_to__in=names)
            )
            .annotate(at=models.Case(models.When(status=Job.Status.RUNNING, then="node"), default="sent_to"))
            .order_by()
            .values("at")
            .annotate(n=Count("pk"))
        )
        return {row["at"]: row["n"] for row in rows}


class Node(models.Model):
    """A worker node of the site: one `manage.py worker` (a django-q2 cluster with a queue of its own,
    `queue`), on this machine or another sharing the database and the broker. It keeps this row
    while it runs: its heartbeat, what it runs, and what it may be sent."""

    class Status(models.TextChoices):
        ONLINE = "online", "Online"
        DRAINING = "draining", "Draining"  # finishes its running jobs, is sent no new ones
        STOPPED = "stopped", "Stopped"  # left cleanly
        LOST = "lost", "Lost"  # its heartbeat stopped

    name = models.CharField(max_length=100, unique=True, help_text="NODE_NAME, by default the machine's host name.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ONLINE)
    version = models.CharField(max_length=40, help_text="The version of the code it runs.")
    slots = models.PositiveIntegerField(default=1, help_text="Jobs it runs at once (its worker processes).")
    clusters = models.JSONField(
        default=list, blank=True, help_text="Names of the oVirt clusters whose VMs it serves; empty: every cluster."
    )
    address = models.CharField(max_length=200, blank=True, help_text="The machine it runs on, for people.")
    vm_id = models.CharField(
        "VM id",
        max_length=36,
        blank=True,
        help_text="The oVirt id of the VM it runs in (NODE_VM_ID, else its SMBIOS UUID): how a proxy VM is known.",
    )
    lvm_config = models.TextField(
        "LVM configuration",
        blank=True,
        help_text="Its LVM device filters as it read them when it joined (core.lvm_filter): a proxy's must "
        "hide attached disks.",
    )
    pid = models.IntegerField(null=True, blank=True)
    started = models.DateTimeField(default=timezone.now)
    heartbeat = models.DateTimeField(default=timezone.now)
    status_reason = models.CharField(max_length=300, blank=True)

    objects = NodeQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        """The django-q2 cluster name (its queue) of the node: tasks sent there run on it alone."""
        return f"node-{self.name}"

    def serves_cluster(self, cluster_name: str) -> bool:
        return not self.clusters or cluster_name in self.clusters
