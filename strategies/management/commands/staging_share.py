from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from inventory.models import DataCenter, Host
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
        try:
            if remove:
                export = unserve_staging_share(data_center=data_center)
                if export is None:
                    raise CommandError(f"{staging_share(data_center)} is not served by this node.")
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
        record_command(action="staging_share_served", target=found, share=export.share)
        self.stdout.write(
            f"Serving {export.directory} as {export.share} to {', '.join(export.clients)}. Create the export domain "
            f"of data center {data_center} on NFS {export.share} and attach it to {data_center}."
        )
