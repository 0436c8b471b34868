"""Proxy VMs: the VMs our nodes run in, through which disk attachment backups read disk snapshots.

A node knows the VM it runs in (its SMBIOS UUID is the oVirt VM id, or NODE_VM_ID says it) and
records it on its row when it joins; that VM, once synced, is offered as a proxy. An admin marks it
(API, `manage.py proxy add`), bound to that node; ProxyVM.clean() says what makes it usable."""

from django.core.exceptions import ValidationError

from inventory.models import VM, Cluster, ProxyVM
from jobs.models import Node
from jobs.placement import Placement


class ProxyError(ValueError):
    """Bad input, said for people; `fields` maps each field to what is wrong with it."""

    def __init__(self, fields: dict[str, str]):
        super().__init__(" ".join(fields.values()))
        self.fields = fields


def proxies_in(cluster: Cluster):
    """The enabled proxy VMs of a cluster, still on their engine, by name."""
    return (
        ProxyVM.objects.filter(enabled=True, vm__cluster=cluster, vm__missing_since=None)
        .select_related("vm", "node")
        .order_by("vm__name")
    )


def proxy_placement(proxies: list[ProxyVM], cluster: str) -> Placement:
    """On the node inside one of `proxies` (of cluster `cluster`): the first whose node is online, else
    the first (the job waits for it, saying so); with none, a node no node can be (the job waits,
    saying that none is marked)."""
    if not proxies:
        # A name no node can have (node names hold no spaces): the job waits, saying why.
        return Placement(node="(no proxy VM)", says=f"runs inside a proxy VM of cluster {cluster} (none is marked)")
    alive = set(Node.objects.alive().filter(name__in=[p.node_id for p in proxies]).values_list("name", flat=True))
    proxy = next((p for p in proxies if p.node_id in alive), proxies[0])
    return Placement(
        node=proxy.node_id,
        clusters=frozenset({cluster}),
        says=f"runs inside proxy VM {proxy.vm.name} of cluster {cluster}",
    )


def proxy_slot(proxy: ProxyVM) -> dict:
    """One of the proxy's attachment places, held by a job while it runs: a proxy takes at most
    `max_attached` disks at once."""
    return {
        "key": f"proxy:{proxy.pk}",
        "limit": proxy.max_attached,
        "label": f"disks are already attached to proxy VM {proxy.vm.name} (its most attached)",
    }


def node_inside(vm: VM) -> Node | None:
    """The node that says it runs inside this VM."""
    return Node.objects.filter(vm_id=str(vm.engine_id)).order_by("name").first()


def offered_proxies() -> list[tuple[VM, Node]]:
    """VMs a node says it runs inside that are not proxies yet: what to offer to mark."""
    by_vm = {n.vm_id: n for n in Node.objects.exclude(vm_id="")}
    vms = VM.objects.filter(engine_id__in=list(by_vm), proxy=None, missing_since=None).select_related("cluster")
    return [(vm, by_vm[str(vm.engine_id)]) for vm in vms.order_by("name")]


def mark_proxy(*, vm: VM, node: str = "", **fields) -> ProxyVM:
    """Mark `vm` as a proxy VM of `node` (by default the node that says it runs inside it), with the
    ProxyVM `fields` given (device_dir, interface, max_attached). Raises ProxyError."""
    if ProxyVM.objects.filter(vm=vm).exists():
        raise ProxyError({"vm": f"VM {vm.name} is already a proxy VM (of node {vm.proxy.node_id})."})
    if node:
        found = Node.objects.filter(name=node).first()
        if found is None:
            names = ", ".join(Node.objects.values_list("name", flat=True)) or "none has joined yet"
            raise ProxyError({"node": f"There is no node named {node!r}; nodes: {names}."})
    else:
        found = node_inside(vm)
        if found is None:
            names = ", ".join(f"{n.name} (in VM {n.vm_id or 'unknown'})" for n in Node.objects.all()) or "none"
            raise ProxyError(
                {
                    "node": f"No node says it runs inside VM {vm.name} ({vm.engine_id}); nodes: {names}. Start the "
                    "node in that VM (its SMBIOS UUID is the VM's id, or set NODE_VM_ID), or name the node."
                }
            )
    proxy = ProxyVM(vm=vm, node=found, **fields)
    proxy.device_dir = proxy.device_dir.rstrip("/") or "/"
    try:
        proxy.full_clean(validate_unique=False)
    except ValidationError as e:
        raise ProxyError({k: " ".join(v) for k, v in e.message_dict.items()}) from None
    proxy.save()
    return proxy
