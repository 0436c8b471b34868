"""Instant restore against a full restore of the same point, in one run on the same engine.

    .venv/bin/python bench/instant.py [--data-gib 1,8] [--warm]

For each size D: a VM with an 8 GiB thin disk holding D GiB (uploaded by `ovirt-img upload-disk`,
attached to a new VM) is backed up full; then, on that one point:
  - our full restore of it as a new VM (every byte uploaded),
  - our instant restore of it (the temporary domain laid out beside the point, exported by the node's
    NFS-Ganesha in the engine's storage network, imported, registered, started) until the VM is up,
and prints the times and their ratio (goal: under 1/10), for each D, to show the instant restore's does
not grow with the data. With the instant VM up, it reads the whole disk as the guest sees it through
the VM's qemu (its NBD export: the chain read over NFS) against a local read of the same chain, and
prints that throughput ratio. Needs root (the engine's storage network is a network namespace).
Page cache is dropped before each timed run when this process may and `--warm` is not given.
"""

import argparse
import glob
import json
import os
import subprocess

import checks
from backup import GiB, MiB, timed
from workspace import open_workspace, run_or_exit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-gib", default="1,8", help="the sizes of data the disk holds, comma-separated")
    parser.add_argument("--warm", action="store_true", help="keep the page cache")
    args = parser.parse_args()
    sizes = [int(s) for s in args.data_gib.split(",") if s]
    if not sizes or any(s < 1 or s > 8 for s in sizes):
        raise SystemExit("--data-gib: sizes from 1 to 8 (the disk is 8 GiB)")
    if os.geteuid() != 0:
        raise SystemExit("bench/instant.py needs root: the engine's storage network is a network namespace")
    work = open_workspace("bench-instant-")
    import ovirtsdk4.types as types
    from django.conf import settings

    from inventory.models import VM, Manager
    from inventory.sync import sync_manager
    from jobs.models import Node
    from jobs.nfs import node_exporter
    from ovirtsim import Simulator
    from recovery.instant.workflow import request_discard, request_instant_restore
    from recovery.restore import request_restore
    from repository.models import BackupDestination, BackupPoint
    from strategies.backup import request_backup

    with Simulator(work / "engine", seed="demo") as sim:
        if not sim.storage_netns:
            raise SystemExit("the simulator made no storage network (root, iproute2, rpcbind?)")
        settings.NFS_EXPORTER, settings.NFS_ADDRESS, settings.NFS_PORT = "ganesha", "127.0.0.1", 0
        settings.NFS_BIND, settings.NFS_NETNS, settings.NFS_CLIENTS = "127.0.0.1", sim.storage_netns, ["127.0.0.1"]
        Node.objects.create(name=settings.NODE_NAME, version="bench")
        manager = Manager.objects.create(name="bench", **sim.manager_fields)
        (work / "repo").mkdir()
        destination = BackupDestination.objects.create(name="repo", path=str(work / "repo"))
        rows = []
        try:
            for data in sizes:
                rows.append(
                    measure(
                        sim,
                        work,
                        manager,
                        destination,
                        data,
                        types=types,
                        sync=sync_manager,
                        VM=VM,
                        BackupPoint=BackupPoint,
                        request_backup=request_backup,
                        request_restore=request_restore,
                        request_instant_restore=request_instant_restore,
                        request_discard=request_discard,
                    )
                )
        finally:
            node_exporter().stop()
    print()
    for data, t_instant, t_full, nfs_rate, local_rate in rows:
        print(
            f"{data} GiB of data: instant restore up in {t_instant:.2f}s, full restore {t_full:.2f}s: "
            f"{t_instant / t_full:.3f}x (goal < 0.1); guest read over NFS {nfs_rate:.0f} MiB/s, local read of the "
            f"chain {local_rate:.0f} MiB/s: {nfs_rate / local_rate:.2f}x"
        )
    if len(rows) > 1:
        growth = rows[-1][1] / rows[0][1]
        checks.ratio(
            "instant", f"instant restore up, {rows[-1][0]} GiB / {rows[0][0]} GiB of data", rows[-1][1], rows[0][1]
        )
        print(f"instant restore's time with {rows[-1][0]} GiB against {rows[0][0]} GiB of data: {growth:.2f}x")


def measure(
    sim,
    work,
    manager,
    destination,
    data: int,
    *,
    types,
    sync,
    VM,
    BackupPoint,
    request_backup,
    request_restore,
    request_instant_restore,
    request_discard,
):
    image = work / f"disk-{data}.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "8G"], check=True)
    # Data in 64 MiB pieces every 64 MiB step up to D GiB: real bytes, no zeros to skip.
    # Real bytes, no zeros to skip: D GiB from the start, 1 GiB a request (qemu-io's limit is below 2 GiB).
    writes = [arg for n in range(data) for arg in ("-c", f"write -P 0x5a {n}G 1G")]
    subprocess.run(["qemu-io", "-f", "raw", *writes, str(image)], check=True, stdout=subprocess.DEVNULL)
    checks.source_image(image, fmt="raw", virtual_size=8 * GiB)
    name = f"bench{data}"
    subprocess.run(
        sim.ovirt_img("upload-disk", "-s", "data-nfs", "-f", "qcow2", "--name", f"{name}_disk", str(image)),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    image.unlink()
    with sim.connect() as conn:
        system = conn.system_service()
        disk = next(d for d in system.disks_service().list(search=f"name={name}_disk") if d.name == f"{name}_disk")
        vm = system.vms_service().add(types.Vm(name=name, cluster=types.Cluster(name="Production")))
        system.vms_service().vm_service(vm.id).disk_attachments_service().add(
            types.DiskAttachment(
                disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO, bootable=True, active=True
            )
        )
    sync(manager)
    row = VM.objects.get(manager=manager, name=name)
    point = BackupPoint.objects.get(
        pk=run_or_exit(request_backup(vm=row, origin="cli", destination=destination, type="full")).result["point"]
    )
    stored = point.directory.path / point.manifest().disks[0].file
    checks.at_least("the backup's stored bytes", stored.stat().st_blocks * 512, "the data written", data * GiB * 0.9)
    t_full = timed(
        f"full restore of {data} GiB",
        lambda: run_or_exit(request_restore(point=point, origin="cli", name=f"{name}-full", cluster="Production")),
    )
    holder = {}

    def boot():
        instant, job = request_instant_restore(point=point, name=f"{name}-instant", origin="cli")
        run_or_exit(job)
        holder["instant"] = instant

    t_instant = timed(f"instant restore of {data} GiB until up", boot)
    instant = holder["instant"]
    instant.refresh_from_db()
    checks.equal("the instant restore's state", instant.status, "running")
    # The guest's read: the whole disk through the VM's qemu (its NBD export: the chain over NFS).
    disk_id = instant.disks[0]["image_id"]
    sockets = glob.glob(f"/tmp/ovirtsim-*/**/vm-{instant.vm_engine_id[:8]}/nbd.sock", recursive=True)
    checks.equal(f"the instant VM's NBD sockets ({sockets})", len(sockets), 1)
    nfs_rate = read_rate(f"nbd+unix:///{disk_id}?socket={sockets[0]}", "raw", data, f"guest read of {data} GiB")
    chain = point_chain_spec(point)
    local_rate = read_rate("json:" + json.dumps(chain), None, data, f"local read of the chain ({data} GiB)")
    run_or_exit(request_discard(instant=instant, origin="cli"))
    with sim.connect() as conn:
        vms = conn.system_service().vms_service()
        for made in vms.list(search=f"name={name}*"):
            if made.name in (name, f"{name}-full"):
                vms.vm_service(made.id).remove()
    checks.ratio("instant", f"instant restore up / full restore, {data} GiB of data", t_instant, t_full, goal="< 0.1")
    checks.ratio("instant", f"guest read over NFS / local read of the chain, {data} GiB", nfs_rate, local_rate)
    return data, t_instant, t_full, nfs_rate, local_rate


def point_chain_spec(point) -> dict:
    """The point's disk as qemu opens it from the repository (one layer: a full point)."""
    entry = point.manifest().disks[0]
    return {"driver": entry.format, "file": {"driver": "file", "filename": str(point.directory.path / entry.file)}}


def read_rate(source: str, fmt: str | None, data_gib: int, label: str) -> float:
    """MiB/s of data read: the whole 8 GiB disk `source` (`data_gib` of data, the rest holes) read
    through qemu into nothing (null-co of the same size)."""
    size = 8 * GiB
    args = ["qemu-img", "convert", "-n"]
    if fmt:
        args += ["-f", fmt]
    args += [source, "--target-image-opts", f"driver=null-co,size={size}"]
    seconds = timed(label, lambda: subprocess.run(args, check=True))
    rate = checks.positive(f"the rate of {label}", data_gib * GiB / MiB / seconds)
    return rate


if __name__ == "__main__":
    main()
