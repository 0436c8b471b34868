from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from inventory.models import VM, ProxyVM
from inventory.proxies import ProxyError, mark_proxy, offered_proxies
from inventory.validators import is_uuid


def find_vm(name: str) -> VM:
    vms = VM.objects.filter(missing_since=None).select_related("cluster")
    found = list(vms.filter(engine_id=name)) if is_uuid(name) else list(vms.filter(name=name))
    if not found:
        raise CommandError(f"No VM named {name!r} in the inventory (sync its manager first).")
    if len(found) > 1:
        raise CommandError(f"{len(found)} VMs are named {name!r} (on different managers); give the engine id.")
    return found[0]


class Command(BaseCommand):
    help = (
        "Proxy VMs of disk attachment backups: `add VM` marks the VM a node runs inside as its proxy, "
        "`list` shows them and the VMs offered, `remove VM` unmarks one."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="verb", required=True)
        add = sub.add_parser("add", help="mark a VM as the proxy VM of the node inside it")
        add.add_argument("vm", help="the VM's name or engine id")
        add.add_argument("--node", default="", help="the node inside it (default: the one that says so)")
        add.add_argument("--device-dir", default="/dev/disk/by-id", help="where the node finds attached disks")
        add.add_argument("--interface", default=ProxyVM.Interface.VIRTIO_SCSI, help="virtio_scsi (default) or virtio")
        add.add_argument("--max-attached", type=int, default=8, help="disks attached to it at once (default 8)")
        sub.add_parser("list", help="the proxy VMs, and VMs a node runs in that are not proxies yet")
        remove = sub.add_parser("remove", help="unmark a proxy VM (the VM itself is left alone)")
        remove.add_argument("vm", help="the VM's name or engine id")

    def handle(self, *args, verb, **options):
        getattr(self, f"handle_{verb}")(**options)

    def handle_add(self, *, vm, node, device_dir, interface, max_attached, **options):
        target = find_vm(vm)
        try:
            proxy = mark_proxy(
                vm=target, node=node, device_dir=device_dir, interface=interface, max_attached=max_attached
            )
        except ProxyError as e:
            raise CommandError(str(e)) from None
        record_command(action="proxy_created", target=proxy)
        self.stdout.write(
            f"VM {target.name} is now the proxy VM of node {proxy.node_id} for cluster {target.cluster.name} "
            f"({proxy.get_interface_display()}, devices in {proxy.device_dir}, at most {proxy.max_attached} attached)."
        )

    def handle_list(self, **options):
        proxies = ProxyVM.objects.select_related("vm__cluster")
        for proxy in proxies:
            state = "" if proxy.enabled else ", disabled"
            self.stdout.write(
                f"{proxy.vm.name}\tcluster {proxy.vm.cluster.name if proxy.vm.cluster else '-'}\tnode {proxy.node_id}"
                f"\t{proxy.interface}\t{proxy.device_dir}\tat most {proxy.max_attached} attached{state}"
            )
        for vm, node in offered_proxies():
            self.stdout.write(f"{vm.name}\toffered: node {node.name} runs inside it (manage.py proxy add {vm.name})")
        if not proxies and not offered_proxies():
            self.stdout.write("No proxy VM, and no node says it runs inside a VM of the inventory.")

    def handle_remove(self, *, vm, **options):
        target = find_vm(vm)
        proxy = ProxyVM.objects.filter(vm=target).first()
        if proxy is None:
            raise CommandError(f"VM {target.name} is not a proxy VM.")
        name = str(proxy)
        proxy.delete()
        record_command(action="proxy_deleted", target=proxy, name=name)
        self.stdout.write(f"VM {name} is no longer a proxy VM.")
