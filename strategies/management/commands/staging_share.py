from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from inventory.models import DataCenter, Host, StagingShare
from jobs.models import Node
from jobs.nfs import NfsError
from strategies.export_domain.staging import serve_staging_share, staging_share, unserve_staging_share


class Command(BaseCommand):
    help = (
        "Serve a data center's directory of this node's staging share over NFS (the export storage domain "
        "strategy's), and print the NFS path to create the data center's export domain on; --remove stops "
        "serving it (its files stay)."
    )

    def add_arguments(self, parser):
        parser.add_argument("data_center", help="data center name, as synced from the engine")
        parser.add_argument(
            "--clients",
            default="",
            help="comma-separated addresses or networks that may mount it (default: the data center's hosts)",
        )
        parser.add_argument("--remove", action="store_true")

    def handle(self, *args, data_center, clients, remove, **options):
        found = DataCenter.objects.filter(name=data_center).first()
        if found is None:
            known = ", ".join(sorted(set(DataCenter.objects.values_list("name", flat=True)))) or "none (sync first)"
            raise CommandError(f"No data center named {data_center!r}; the data centers are: {known}.")
        node = Node.objects.filter(name=settings.NODE_NAME).first()
        if node is None:
            raise CommandError(
                f"This node ({settings.NODE_NAME}) has not joined yet: start its worker (manage.py worker) once, "
                "then serve the share from it."
            )
        try:
            if remove:
                export = unserve_staging_share(data_center=data_center)
                if export is None:
                    raise CommandError(f"{staging_share(data_center)} is not served by this node.")
                StagingShare.objects.filter(data_center=found, node=node).delete()
                record_command(action="staging_share_removed", target=found, share=export.share)
                self.stdout.write(f"No longer served: {export.share} ({export.directory}); its files stay.")
                return
            wanted = [c.strip() for c in clients.split(",") if c.strip()] or sorted(
                set(
                    Host.objects.filter(cluster__data_center=found)
                    .exclude(address="")
                    .values_list("address", flat=True)
                )
            )
            if not wanted:
                raise CommandError(f"Data center {data_center} has no host with an address: name them with --clients.")
            export = serve_staging_share(data_center=data_center, clients=wanted)
        except NfsError as e:
            raise CommandError(str(e)) from None
        other = StagingShare.objects.filter(data_center=found).exclude(node=node).first()
        StagingShare.objects.update_or_create(
            data_center=found, defaults={"node": node, "directory": str(export.directory), "share": export.share}
        )
        if other is not None:
            self.stderr.write(
                f"Data center {data_center}'s staging share was node {other.node_id}'s ({other.share}); its export "
                f"domain's backups now run here: move the export domain to {export.share}."
            )
        record_command(action="staging_share_served", target=found, share=export.share)
        self.stdout.write(
            f"Serving {export.directory} as {export.share} to {', '.join(export.clients)}. Create the export domain "
            f"of data center {data_center} on NFS {export.share} and attach it to {data_center}."
        )
