"""Restore speed against the peer, in one run on the same image.

    .venv/bin/python bench/restore.py [--runs 3] [--warm]

Backs up the demo engine's 8 GiB thin QCOW2 disk holding 1 GiB (bigdata01_data) once, then
times, alternately and --runs times each, on the same stored image:
  - `ovirt-img upload-disk -f qcow2` of the backup's image to a new disk (the peer),
  - our restore job of that disk as a floating disk (check the image against its manifest while uploading,
    create the disk, upload through an image transfer, finalize, record),
and prints the medians and their ratio; then our restore once more with the hosts unreachable from
this node, every byte going through the engine's imageio proxy, against the direct ones. The disks
made are removed between runs. Page cache is dropped before each run when this process may (root)
and `--warm` is not given.
"""

import argparse
import statistics
import subprocess

import checks
from backup import GiB, MiB, timed
from workspace import open_workspace, run_or_exit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warm", action="store_true", help="keep the page cache (backup.timed reads it)")
    runs = parser.parse_args().runs
    work = open_workspace("bench-restore-")
    from inventory.models import VM, Manager
    from inventory.sync import sync_manager
    from jobs.models import Job
    from jobs.runner import run_job
    from ovirtsim import Simulator
    from recovery.restore import request_restore
    from repository.models import BackupDestination, BackupPoint
    from strategies.backup import request_backup

    with Simulator(work / "engine", seed="demo") as sim:
        manager = Manager.objects.create(name="bench", **sim.manager_fields)
        sync_manager(manager)
        (work / "repo").mkdir()
        destination = BackupDestination.objects.create(name="repo", path=str(work / "repo"))
        vm = VM.objects.get(manager=manager, name="bigdata01")
        disk = vm.disks.get()

        def run(job: Job) -> Job:
            run_job(job.pk)
            job.refresh_from_db()
            if job.status != Job.Status.SUCCEEDED:
                raise SystemExit(f"{job.kind} failed: {job.error}")
            return job

        point = BackupPoint.objects.get(
            pk=run(request_backup(vm=vm, origin="cli", destination=destination, type="full")).result["point"]
        )
        image = point.directory.path / f"{disk.engine_id}.qcow2"
        checks.source_image(image, fmt="qcow2", virtual_size=disk.provisioned_size)
        print(
            f"disk {disk.name}: {disk.provisioned_size / GiB:.0f} GiB virtual; backup image "
            f"{image.stat().st_blocks * 512 / MiB:.0f} MiB stored"
        )
        domain = "data-nfs"

        def remove_disks_but(keep: set[str]) -> None:
            with sim.connect() as conn:
                disks = conn.system_service().disks_service()
                for made in disks.list():
                    if made.id not in keep:
                        disks.disk_service(made.id).remove()

        with sim.connect() as conn:
            before = {d.id for d in conn.system_service().disks_service().list()}

        def check_made(what: str) -> None:
            """The one disk a run made holds the backup's bytes."""
            with sim.connect() as conn:
                made = [d for d in conn.system_service().disks_service().list() if d.id not in before]
            checks.equal(f"the disks {what} made", len(made), 1)
            volume = work / "engine" / "storage" / made[0].storage_domains[0].id / "images" / made[0].id
            checks.same_image(f"the disk {what} made", image, volume / made[0].image_id)

        ours, peers = [], []
        for n in range(runs):
            peers.append(
                timed(
                    f"ovirt-img upload-disk ({n + 1})",
                    lambda n=n: subprocess.run(
                        sim.ovirt_img("upload-disk", "-s", domain, "-f", "qcow2", "--name", f"peer-{n}", str(image)),
                        check=True,
                        stdout=subprocess.DEVNULL,
                    ),
                )
            )
            check_made(f"ovirt-img upload-disk ({n + 1})")
            remove_disks_but(before)
            ours.append(
                timed(
                    f"our floating restore job ({n + 1})",
                    lambda: run_or_exit(request_restore(point=point, origin="cli", floating=True, disks=[disk.name])),
                )
            )
            check_made(f"our floating restore ({n + 1})")
            remove_disks_but(before)
        sim.set_hosts_reachable(False)
        try:
            proxied_job = []
            t_proxy = timed(
                "our floating restore job through the engine's imageio proxy (hosts unreachable)",
                lambda: proxied_job.append(
                    run_or_exit(request_restore(point=point, origin="cli", floating=True, disks=[disk.name]))
                ),
            )
        finally:
            sim.set_hosts_reachable(True)
        check_made("our floating restore through the proxy")
        said = list(proxied_job[0].events.filter(message__contains="imageio").values_list("message", flat=True))
        checks.equal(
            f"the path the restore with the hosts unreachable says it took ({said})",
            bool(said) and all("through the engine's imageio proxy" in m for m in said),
            True,
        )
        remove_disks_but(before)
        t_ours, t_peer = statistics.median(ours), statistics.median(peers)
        checks.ratio("restore", "floating restore / ovirt-img upload-disk (medians)", t_ours, t_peer, goal="<= 0.7")
        checks.ratio("restore", "floating restore through the engine's imageio proxy / directly", t_proxy, t_ours)
        print()
        print(
            f"floating restore / ovirt-img upload-disk: {t_ours / t_peer:.2f}x (median of {runs}: {t_ours:.2f}s "
            f"against {t_peer:.2f}s; every restore checks the files it reads against the manifests as it uploads them; "
            "goal <= 0.7x)"
        )
        print(f"floating restore through the engine's imageio proxy / directly to the host: {t_proxy / t_ours:.2f}x")


if __name__ == "__main__":
    main()
