"""Export storage domain: reading an exported VM's image from the staging share against `cp`, in one run.

    .venv/bin/python bench/export_domain.py [--warm]

On the demo engine's 8 GiB thin QCOW2 disk holding 1 GiB (bigdata01_data, a stopped VM of data
center Default), exported by the engine to export1, whose share is this node's staging directory,
times:
  - `cp --sparse=always` of the exported volume out of the share (the peer: what an administrator
    copying an export domain by hand does),
  - our read of the same exported volume into a sparse RAW file (strategies.export_domain's
    `qemu-img convert`, as the backup does),
  - our whole export domain backup job of the VM (snapshot, export, read, removal, OVF, manifest),
and prints the ratios. The copies are compared with the source image; the page cache is dropped
before each run when this process may (root) and `--warm` is not given.
"""

import subprocess
import sys
from pathlib import Path

import checks
from backup import timed
from workspace import demo_vm, open_workspace, run_or_exit, volume_file

MiB, GiB = 1024**2, 1024**3


def main() -> None:
    work = open_workspace("bench-export-")
    import ovirtsdk4.types as types
    from django.conf import settings

    from ovirt.exports import export_vm, remove_exported_vm, wait_exported
    from repository.models import BackupPoint
    from strategies.backup import request_backup
    from strategies.export_domain import copy_to_sparse_raw, exported_volume, volume_format

    with demo_vm(work) as (sim, vm, destination):
        settings.EXPORT_STAGING_DIR = Path(sim.state_dir) / "exports"
        disk = vm.disks.get()
        source = volume_file(sim, work, disk)
        allocated = checks.source_image(source, fmt="qcow2", virtual_size=disk.provisioned_size)
        print(f"disk {disk.name}: {disk.provisioned_size / GiB:.0f} GiB virtual, {allocated / MiB:.0f} MiB allocated")
        vm_id, disk_id = str(vm.engine_id), str(disk.engine_id)
        with sim.connect() as conn:
            (domain,) = conn.system_service().storage_domains_service().list(search="name=export1")
            started = export_vm(conn, vm_id, storage_domain=domain, name=vm.name)
            wait_exported(conn, vm_id, storage_domain=domain, name=vm.name, started=started)
            try:
                volume = exported_volume(settings.EXPORT_STAGING_DIR / "Default" / domain.id / "images" / disk_id)
                fmt = volume_format(volume.parent, volume.name)
                peer, ours = work / "peer.img", work / "ours.raw"
                t_peer = timed(
                    "cp --sparse=always of the exported volume",
                    lambda: subprocess.run(["cp", "--sparse=always", str(volume), str(peer)], check=True),
                )
                t_ours = timed(
                    f"our read of the exported volume ({fmt}) into a sparse RAW file",
                    lambda: copy_to_sparse_raw(volume, fmt, ours, progress=lambda done: None, check=lambda: None),
                )
                checks.same_bytes("cp's copy", volume, peer)
                checks.same_image("our copy", source, ours)
                stored_peer, stored_ours = peer.stat().st_blocks * 512, ours.stat().st_blocks * 512
                checks.at_most("what our copy stores", stored_ours, "the disk's allocation", allocated)
            finally:
                remove_exported_vm(conn, domain.id, vm_id, name=vm.name)
            if conn.system_service().vms_service().vm_service(vm_id).get().status != types.VmStatus.DOWN:
                checks.impossible("the VM is not down and unlocked after its export")

        jobs = {}
        t_job = timed(
            "our export domain backup job",
            lambda: jobs.setdefault(
                "backup",
                run_or_exit(request_backup(vm=vm, origin="cli", destination=destination, strategy="export_domain")),
            ),
        )
        point = BackupPoint.objects.get(pk=jobs["backup"].result["point"])
        checks.same_image("our backup's point", source, point.directory.path / f"{disk_id}.raw")

        bench = "export_domain"
        checks.ratio(bench, "our read / cp --sparse=always of the exported volume", t_ours, t_peer)
        checks.ratio(bench, "backup job / cp --sparse=always of the exported volume", t_job, t_peer)
        print()
        print(
            f"cp / our read: {t_peer / t_ours:.2f}x speed; stored {stored_ours / MiB:.0f} MiB "
            f"(cp {stored_peer / MiB:.0f} MiB)"
        )
        print(f"whole backup job (the engine's export included): {t_job:.2f}s, {t_job / t_peer:.2f}x the cp alone")


if __name__ == "__main__":
    sys.exit(main())
