"""Worker nodes: each `manage.py worker` keeps its Node row (join, heartbeat, stop), people drain
one, and a node whose heartbeat stopped is marked lost and its running jobs failed, for the reaper
of any other node to undo what they made on the engine.

Every state change is a conditional update: a heartbeat never brings back a node someone marked
lost or drained, and two reapers never both fail the same node's jobs.
"""

import logging
import os
import socket
from collections.abc import Callable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import OperatorError
from core.holders import holder_alive
from core.version import VERSION
from jobs.models import Job, Node

log = logging.getLogger("jobs")

# What the apps above do on this node when its worker starts (before it takes work) and at each of its
# heartbeats: a browsing session's mounts, say, are this node's to undo. They register here
# (register_node_hooks in their AppConfig.ready); this layer knows nothing of what they hold.
ON_JOIN: list[Callable[[], object]] = []
ON_BEAT: list[Callable[[], object]] = []


def register_node_hooks(
    *, on_join: Callable[[], object] | None = None, on_beat: Callable[[], object] | None = None
) -> None:
    if on_join is not None and on_join not in ON_JOIN:
        ON_JOIN.append(on_join)
    if on_beat is not None and on_beat not in ON_BEAT:
        ON_BEAT.append(on_beat)


def run_node_hooks(hooks: list[Callable[[], object]]) -> list[str]:
    """Run each hook; one failing does not stop the others nor the worker. Returns the failures."""
    failures = []
    for hook in hooks:
        try:
            hook()
        except Exception as e:
            log.exception("node hook %s failed", hook.__qualname__)
            failures.append(f"{hook.__qualname__}: {e}")
    return failures


class NodeError(OperatorError):
    pass


def join_site(*, name: str, slots: int, clusters: list[str], vm_id: str = "", lvm_config: str = "") -> Node:
    """This process's node, online (or still draining, if someone drained it): its row made or
    taken over. Refused when a live node of the same name runs elsewhere."""
    name = name.strip()
    if not name or len(name) > 100 or any(c.isspace() or c == "/" for c in name):
        raise NodeError(f"NODE_NAME {name!r} is not a node name: 1 to 100 characters, no spaces or slashes.")
    fields = {
        "version": VERSION,
        "slots": slots,
        "clusters": sorted(set(clusters)),
        "address": socket.gethostname(),
        "vm_id": vm_id.strip().lower(),
        "lvm_config": lvm_config,
        "pid": os.getpid(),
        "started": timezone.now(),
        "heartbeat": timezone.now(),
        "status_reason": "",
    }
    with transaction.atomic():
        node = Node.objects.select_for_update().filter(name=name).first()
        if node is None:
            try:
                with transaction.atomic():
                    return Node.objects.create(name=name, status=Node.Status.ONLINE, **fields)
            except IntegrityError:  # another process of that name joined this instant
                raise NodeError(
                    f"A node named {name} is joining the site at this moment: give this one another NODE_NAME."
                ) from None
        silent = (timezone.now() - node.heartbeat).total_seconds()
        fresh = node.status in (Node.Status.ONLINE, Node.Status.DRAINING) and silent < settings.NODE_LOST_AFTER
        # A worker of this machine restarting after a crash takes its row over at once; one that
        # still runs, or a live node on another machine, keeps it.
        taken = node.address != fields["address"] or (node.pid != os.getpid() and holder_alive(node=name, pid=node.pid))
        if fresh and taken:
            raise NodeError(
                f"A node named {name} is already online on {node.address or 'another machine'} "
                f"(last heartbeat {silent:.0f}s ago): give this one another NODE_NAME."
            )
        status = Node.Status.DRAINING if node.status == Node.Status.DRAINING else Node.Status.ONLINE
        Node.objects.filter(pk=node.pk).update(status=status, **fields)
        node.refresh_from_db()
        return node


def beat(name: str) -> str:
    """The node's heartbeat; returns its status (a node found lost stops taking work: its jobs were
    failed and undone elsewhere while it was silent, and it must join again)."""
    Node.objects.filter(name=name, status__in=[Node.Status.ONLINE, Node.Status.DRAINING]).update(
        heartbeat=timezone.now()
    )
    return Node.objects.filter(name=name).values_list("status", flat=True).first() or ""


def leave_site(name: str) -> None:
    """A clean stop: the node is sent nothing more until it joins again."""
    Node.objects.filter(name=name, status__in=[Node.Status.ONLINE, Node.Status.DRAINING]).update(
        status=Node.Status.STOPPED, status_reason="stopped", heartbeat=timezone.now()
    )


def find_node(name: str) -> Node:
    try:
        return Node.objects.get(name=name)
    except Node.DoesNotExist:
        known = ", ".join(Node.objects.values_list("name", flat=True)) or "none"
        raise NodeError(f"No node is named {name!r} (nodes: {known}).") from None


def drain(name: str, *, by: str = "") -> Node:
    """Let the node finish what it runs and send it nothing new (it stays drained across restarts)."""
    node = find_node(name)
    if node.status == Node.Status.LOST:
        raise NodeError(
            f"Node {name} is lost (no heartbeat since {timezone.localtime(node.heartbeat):%Y-%m-%d %H:%M}): "
            "it runs nothing to drain; its jobs were failed."
        )
    if node.status == Node.Status.DRAINING:
        raise NodeError(f"Node {name} is already draining.")
    reason = f"drained by {by}" if by else "drained"
    Node.objects.filter(pk=node.pk, status__in=[Node.Status.ONLINE, Node.Status.STOPPED]).update(
        status=Node.Status.DRAINING, status_reason=reason
    )
    node.refresh_from_db()
    return node


def undrain(name: str) -> Node:
    """Send the node new jobs again (a stopped node becomes online when it next joins)."""
    node = find_node(name)
    if node.status != Node.Status.DRAINING:
        raise NodeError(f"Node {name} is not draining (it is {node.get_status_display().lower()}).")
    Node.objects.filter(pk=node.pk, status=Node.Status.DRAINING).update(status=Node.Status.ONLINE, status_reason="")
    node.refresh_from_db()
    return node


def wrote_here_or_lost(job: Job) -> bool:
    """Whether this node may remove what the job wrote: it ran here, or its node is lost (a node still
    alive may have processes writing there; it removes them itself when it next joins)."""
    if job.node in ("", settings.NODE_NAME):
        return True
    return Node.objects.filter(name=job.node, status=Node.Status.LOST).exists()


def mark_lost_nodes(now=None) -> dict[Node, list[Job]]:
    """Nodes silent for NODE_LOST_AFTER seconds are lost; jobs sent to them but not started go to
    another node. Returns each node marked lost with the jobs it was running, for the reaper to fail
    and undo (jobs.tasks.give_up_on)."""
    from jobs.runner import dispatch

    now = now or timezone.now()
    lost = {}
    for node in Node.objects.silent(now):
        silent = int((now - node.heartbeat).total_seconds())
        reason = f"no heartbeat for {silent}s"
        if not Node.objects.filter(pk=node.pk, heartbeat=node.heartbeat, status=node.status).update(
            status=Node.Status.LOST, status_reason=reason
        ):
            continue  # it beat meanwhile, or another reaper got there first
        node.refresh_from_db()
        log.warning("node %s lost: %s", node.name, reason)
        lost[node] = list(Job.objects.running().filter(node=node.name))
        for job in Job.objects.queued().filter(sent_to=node.name):
            job.log("info", f"Sent to node {node.name}, which was lost before starting it: sent elsewhere.")
            dispatch(job.pk, kind=job.kind)
    return lost
