from django.core.management.base import BaseCommand
from django.utils import timezone

from jobs.models import Node


class Command(BaseCommand):
    help = "List the site's worker nodes: status, jobs running, workers, clusters served, last heartbeat."

    def handle(self, *args, **options):
        nodes = list(Node.objects.all())
        if not nodes:
            self.stdout.write("No worker node has joined yet: start one with `make worker` (`make run` starts one).")
            return
        load = Node.objects.load([n.name for n in nodes])
        self.stdout.write(
            f"{'NODE':<20} {'STATUS':<9} {'RUNNING':>7} {'WORKERS':>7}  {'HEARTBEAT':<10} {'VERSION':<8} CLUSTERS"
        )
        now = timezone.now()
        for node in nodes:
            ago = f"{int((now - node.heartbeat).total_seconds())}s ago"
            line = (
                f"{node.name:<20} {node.status:<9} {load.get(node.name, 0):>7} {node.slots:>7}  {ago:<10} "
                f"{node.version:<8} {', '.join(node.clusters) or 'every cluster'}"
            )
            if node.status_reason:
                line += f"  ({node.status_reason})"
            self.stdout.write(line)
