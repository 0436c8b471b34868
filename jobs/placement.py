"""Where a job may run: each job kind (or the strategy behind it) declares a rule, and a job is sent
to the queue of an online node that keeps it; a job no online node may take waits, saying why.

Rules are registered by the apps that own the kinds (`register_placement` in their AppConfig.ready),
as their handlers are: this layer knows no kind of theirs. A kind without a rule runs anywhere.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from jobs.models import Job, Node


@dataclass(frozen=True)
class Placement:
    """What a node must be to run a job. Empty: any online node."""

    # The node must serve every one of these oVirt clusters (by name): the VM's cluster for a backup.
    clusters: frozenset[str] = field(default_factory=frozenset)
    # Only this node (by name): a destination local to it, the node inside a proxy VM.
    node: str = ""
    # What the node must do, for people, after "no online node ...": "serves cluster Production".
    says: str = ""

    # Rules that no node can keep at once (two different nodes named): why, for people.
    impossible: str = ""

    def admits(self, node: Node) -> bool:
        if self.impossible or (self.node and node.name != self.node):
            return False
        return all(node.serves_cluster(name) for name in self.clusters)

    def also(self, other: "Placement") -> "Placement":
        """A node keeping this rule and `other`."""
        says = " and ".join(s for s in (self.says, other.says) if s)
        impossible = self.impossible or other.impossible
        if self.node and other.node and self.node != other.node:
            impossible = impossible or f"it needs both node {self.node} and node {other.node}"
        return Placement(
            clusters=self.clusters | other.clusters, node=self.node or other.node, says=says, impossible=impossible
        )


ANYWHERE = Placement()

RULES: dict[str, Callable[[Job], Placement]] = {}


def register_placement(kind: str, rule: Callable[[Job], Placement]) -> None:
    """Jobs of `kind` run where `rule(job)` says."""
    RULES[kind] = rule


def placement_of(job: Job) -> Placement:
    rule = RULES.get(job.kind)
    return rule(job) if rule is not None else ANYWHERE


def in_cluster(name: str | None) -> Placement:
    """On a node serving the oVirt cluster `name` (anywhere when the job has no cluster)."""
    if not name:
        return ANYWHERE
    return Placement(clusters=frozenset({name}), says=f"serves cluster {name}")


def on_node(name: str | None, *, why: str = "") -> Placement:
    """On the node `name` (anywhere when None or empty)."""
    if not name:
        return ANYWHERE
    return Placement(node=name, says=f"is {name}" + (f" ({why})" if why else ""))


def must_choose_node(job: Job) -> bool:
    """Whether the job must go to a chosen node's queue: its rule names a node, or some node serves
    only some clusters. Otherwise every node may run it and it goes to the site's queue."""
    placement = placement_of(job)
    if placement.node:
        return True
    if not Node.objects.exists():
        return False  # no node ever joined (a first start): the first to join takes it
    alive = Node.objects.alive()
    if not alive.exists():
        return True  # every node is draining, stopped or lost: it waits, saying so
    return bool(placement.clusters) and alive.exclude(clusters=[]).exists()


def choose_node(job: Job, nodes: Iterable[Node] | None = None) -> Node | None:
    """The online node with a live heartbeat that keeps the job's rule, the least busy first (jobs it
    runs or was sent, per slot); None when there is none."""
    placement = placement_of(job)
    candidates = [n for n in (nodes if nodes is not None else Node.objects.alive()) if placement.admits(n)]
    if not candidates:
        return None
    load = Node.objects.load({n.name for n in candidates})
    return min(candidates, key=lambda n: (load.get(n.name, 0) / max(n.slots, 1), n.name))


def why_no_node(job: Job) -> str:
    """Why no node takes the job now, in words, naming the nodes there are."""
    placement = placement_of(job)
    if placement.impossible:
        return f"no node can run it: {placement.impossible}"
    alive = list(Node.objects.alive())
    if not alive:
        others = "; ".join(f"{name} is {status}" for name, status in Node.objects.values_list("name", "status"))
        return f"no worker node is online{' (' + others + ')' if others else ''}; it starts when one joins"
    serving = "; ".join(f"{n.name} serves {', '.join(n.clusters) or 'every cluster'}" for n in alive)
    return f"no online node {placement.says or 'takes it'} ({serving}); it starts when one joins"
