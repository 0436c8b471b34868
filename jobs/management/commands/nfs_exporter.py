from django.core.management.base import BaseCommand

from core.formats import plural
from jobs.nfs import node_exporter


class Command(BaseCommand):
    help = (
        "Stop this node's NFS server (NFS-Ganesha, NFS_EXPORTER=ganesha). Its exports stay recorded and are "
        "served again when a worker next needs a share. Workers leave it running on purpose: a VM running "
        "from an instant restore's share must not lose it because a worker stopped."
    )

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["stop"])
        parser.add_argument(
            "--if-idle", action="store_true", help="only when it serves no share (nothing on the engine can need it)"
        )

    def handle(self, *args, action, if_idle, **options):
        exporter = node_exporter()
        if not exporter.running():
            return
        served = exporter.exports()
        if if_idle and served:
            self.stdout.write(f"The NFS server keeps running: it serves {', '.join(e.share for e in served)}.")
            return
        exporter.stop()
        again = f" Its {plural(len(served), 'share')} are served again at the next need." if served else ""
        self.stdout.write(f"The NFS server is stopped.{again}")
