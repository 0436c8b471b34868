from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from jobs.cli import finish, wait_for_job
from jobs.models import Job
from recovery.restore import request_restore
from recovery.ssh_restore import TRANSFERS
from repository.models import BackupPoint


class Command(BaseCommand):
    help = "Restore a backup point as a new VM. Prints the job id; with --wait, the new VM's engine id last."

    def add_arguments(self, parser):
        parser.add_argument("point", type=int, help="backup point id")
        parser.add_argument("--name", default="", help="name of the new VM (must not exist unless --replace)")
        parser.add_argument("--disk", action="append", default=[], help="restore only this disk (alias or id)")
        parser.add_argument("--attach-to", default="", help="restore the disks into this existing VM")
        parser.add_argument("--floating", action="store_true", help="restore the disks attached to no VM")
        parser.add_argument("--allocation", default="original", choices=["original", "thin", "preallocated"])
        parser.add_argument("--replace", action="store_true", help="replace an existing VM of that name")
        parser.add_argument("--cluster", default="")
        parser.add_argument("--storage-domain", default="")
        parser.add_argument("--power-on", action="store_true")
        parser.add_argument(
            "--transfer",
            default="auto",
            choices=list(TRANSFERS),
            help="how the disks are written: imageio, over SSH into the new volumes on a host, or through a "
            "proxy VM of the cluster (proxy) (auto: SSH for points of the SSH transfer, the proxy for points "
            "of disk attachment)",
        )
        parser.add_argument(
            "--to-export-domain",
            action="store_true",
            help="write the VM into its data center's export domain (on this node's staging share), for an "
            "administrator to import; with --import, import it as --name into --cluster and --storage-domain",
        )
        parser.add_argument("--data-center", default="", help="with --to-export-domain: another data center's")
        parser.add_argument("--import", action="store_true", dest="import_vm")
        parser.add_argument("--wait", action="store_true")

    def handle(
        self,
        *args,
        point,
        name,
        cluster,
        storage_domain,
        power_on,
        wait,
        disk,
        attach_to,
        floating,
        allocation,
        replace,
        transfer="auto",
        to_export_domain=False,
        data_center="",
        import_vm=False,
        **options,
    ):
        found = BackupPoint.objects.filter(pk=point).first()
        if found is None:
            raise CommandError(f"No backup point {point}.")
        try:
            job = request_restore(
                point=found,
                origin=Job.Origin.CLI,
                name=name,
                cluster=cluster,
                storage_domain=storage_domain,
                power_on=power_on,
                disks=disk,
                attach_to=attach_to,
                floating=floating,
                allocation=allocation,
                replace=replace,
                transfer=transfer,
                export_domain=to_export_domain,
                data_center=data_center,
                import_vm=import_vm,
            )
        except ValueError as e:
            raise CommandError(str(e)) from None
        record_command(action="restore_requested", target=found, job=job.pk)
        self.stdout.write(str(job.pk))
        if wait:
            job = wait_for_job(job)
            finish(job)
            if job.result.get("vm_id"):
                self.stdout.write(job.result["vm_id"])
            elif job.result.get("exported_vm"):
                self.stdout.write(job.result["exported_vm"])
            else:
                self.stdout.write(" ".join(job.result["disks"].values()))
