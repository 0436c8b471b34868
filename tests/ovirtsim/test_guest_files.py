"""The demo's guest disks hold real partition tables, LVM and filesystems with known files
(ovirtsim.guest_files)."""

import subprocess
import time

import ovirtsdk4.types as types

from ovirtsim import guest_files, guest_images
from tests.ovirtsim.guest_trees import assert_holds
from tests.ovirtsim.helpers import MiB, download
from tests.ovirtsim.test_backups import backup_vm, download_backup_disk, finalize, vm_service

DEMO_SIZES = {"web01_os": 64 * MiB, "db01_os": 64 * MiB, "app01_disk1": 48 * MiB, "app01_disk2": 16 * MiB}
DEMO_SIZES["app01_disk3"] = 16 * MiB


def to_raw(image, out):
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(out)], check=True, capture_output=True)
    return out


def test_it_builds_every_demo_disk_as_guest_files_lays_it_out(tmp_path):
    assert set(DEMO_SIZES) == set(guest_files.DISKS)
    started = time.monotonic()
    for name, size in DEMO_SIZES.items():
        guest_images.build_disk(name, size, tmp_path / f"{name}.raw")
    print(f"built the five demo guest disks in {time.monotonic() - started:.2f} s")
    for name in DEMO_SIZES:
        assert_holds(tmp_path / f"{name}.raw", name, tmp_path)
    assert guest_files.files("web01_os", "p2")["/etc/hostname"] == b"web01\n"
    assert set(guest_files.filesystems("db01_os")) == {"p1", "vg_db01-root", "vg_db01-data"}
    assert subprocess.run(["losetup", "-j", str(tmp_path / "db01_os.raw")], capture_output=True).stdout == b""


def test_it_seeds_the_demo_engines_guest_disks(demo_sim, conn, tmp_path):
    vms = conn.system_service().vms_service()
    for vm_name in ("web01", "db01", "app01"):
        vm = vms.list(search=f"name={vm_name}", follow="disk_attachments.disk")[0]
        disks = {a.disk.name: a.disk for a in vm.disk_attachments if a.disk.name in DEMO_SIZES}
        if vm.status == types.VmStatus.UP:  # read as a backup reads a running VM's disks
            backup = backup_vm(conn, vm.id, [d.id for d in disks.values()])
            for name, disk in disks.items():
                download_backup_disk(conn, demo_sim, backup, disk.id, tmp_path / f"{name}.qcow2")
                to_raw(tmp_path / f"{name}.qcow2", tmp_path / f"{name}.raw")
            assert finalize(conn, backup) == types.BackupPhase.SUCCEEDED
            if backup.to_checkpoint_id:  # the demo engine is shared: leave it as it was
                vm_service(conn, vm.id).checkpoints_service().checkpoint_service(backup.to_checkpoint_id).remove()
        else:
            for name, disk in disks.items():
                download(conn, demo_sim.ca_file, tmp_path / f"{name}.raw", disk_id=disk.id, fmt="raw", out_fmt="raw")
        for name in disks:
            assert_holds(tmp_path / f"{name}.raw", name, tmp_path)
    assert {p.name for p in tmp_path.glob("*.raw")} == {f"{name}.raw" for name in DEMO_SIZES}
