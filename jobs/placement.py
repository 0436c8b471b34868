"""Where a job may run: each job kind (or the strategy behind it) declares a rule, and a job is sent
to the queue of an online node that keeps it; a job no online node may take waits, saying why.

Rules are registered by the apps that own the kinds (`register_placement` in their AppConfig.ready),
as their handlers are: this layer knows no kind of theirs. A kind without a rule runs anywhere.
"""

from collections.abc import Callable
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
    # Two rules naming two different nodes (a strategy's proxy VM on one, the destination local to
    # another): no node keeps both, and the job waits, saying so.
    nowhere: bool = False

    def admits(self, node: Node) -> bool:
        if self.nowhere or (self.node and node.name != self.node):
            return False
        return all(node.serves_cluster(name) for name in self.clusters)

    def both(self, other: "Placement") -> "Placement":
        """Where this rule and `other` both hold: a backup's cluster and its destination's node."""
        says = " and ".join(s for s in (self.says, other.says) if s)
        return Placement(
            clusters=self.clusters | other.clusters,
            node=self.node or other.node,
            says=says,
            nowhere=self.nowhere or other.nowhere or bool(self.node and other.node and self.node != other.node),
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


@dataclass
class Nodes:
    """The nodes as a dispatch sees them, read once for a whole batch (a policy run hands out
    thousands of jobs): whether any ever joined, those alive, and how busy each is, counting the
    jobs this batch sends."""

    any_joined: bool
    alive: list[Node]
    load: dict[str, int]

    @classmethod
    def now(cls) -> "Nodes":
        alive = list(Node.objects.alive())
        load = Node.objects.load([n.name for n in alive]) if alive else {}
        return cls(any_joined=bool(alive) or Node.objects.exists(), alive=alive, load=load)

    def must_choose(self, placement: Placement) -> bool:
        """Whether a job with this rule goes to a chosen node's queue: the rule names a node, every
        node is draining, stopped or lost (it waits, saying so), or some node serves only some
        clusters. Otherwise every node may run it: the site's queue, which every node takes from (and
        with no node yet, the first to join)."""
        if placement.node or placement.nowhere:
            return True
        if not self.any_joined:
            return False
        if not self.alive:
            return True
        return bool(placement.clusters) and any(n.clusters for n in self.alive)

    def choose(self, placement: Placement) -> Node | None:
        """The alive node that keeps the rule, the least busy per worker first, by name between
        equals; None when there is none. The job sent there counts toward its load from now on."""
        candidates = [n for n in self.alive if placement.admits(n)]
        if not candidates:
            return None
        node = min(candidates, key=lambda n: (self.load.get(n.name, 0) / max(n.slots, 1), n.name))
        self.load[node.name] = self.load.get(node.name, 0) + 1
        return node


def why_no_node(job: Job) -> str:
    """Why no node takes the job now, in words, naming the nodes there are."""
    placement = placement_of(job)
    alive = list(Node.objects.alive())
    if not alive:
        others = "; ".join(f"{name} is {status}" for name, status in Node.objects.values_list("name", "status"))
        return f"no worker node is online{' (' + others + ')' if others else ''}; it starts when one joins"
    serving = [f"{n.name} serves {', '.join(n.clusters) or 'every cluster'}" for n in alive]
    if placement.node and all(n.name != placement.node for n in alive):
        # The one node that may run it is not online: say what it is instead.
        status = Node.objects.filter(name=placement.node).values_list("status", flat=True).first()
        if status == Node.Status.ONLINE:
            status = "silent"  # online, but its heartbeat is late: not yet marked lost
        serving.append(f"{placement.node} is {status}" if status else f"no node {placement.node} has joined")
    return f"no online node {placement.says or 'takes it'} ({'; '.join(serving)}); it starts when one joins"
