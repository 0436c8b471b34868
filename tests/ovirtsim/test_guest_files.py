"""The demo's guest disks hold real partition tables, LVM and filesystems with known files
(ovirtsim.guest_files), and a running guest's file can be rewritten through its qemu."""

import subprocess
import time

import ovirtsdk4.types as types
import pytest

from ovirtsim import guest_files, guest_images
from tests.ovirtsim.guest_trees import assert_holds
from tests.ovirtsim.helpers import MiB, add_disk, download, upload, wait_for
from tests.ovirtsim.test_backups import backup_vm, download_backup_disk, finalize, vm_service
from tests.ovirtsim.test_data_plane import disk_snapshot_ids, make_vm, snapshot

DEMO_SIZES = {"web01_os": 64 * MiB, "db01_os": 64 * MiB, "app01_disk1": 48 * MiB, "app01_disk3": 32 * MiB}


def to_raw(image, out):
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(out)], check=True, capture_output=True)
    return out


def test_it_builds_every_demo_disk_as_guest_files_lays_it_out(tmp_path):
    assert set(DEMO_SIZES) == set(guest_files.DISKS)
    started = time.monotonic()
    for name, size in DEMO_SIZES.items():
        guest_images.build_disk(name, size, tmp_path / f"{name}.raw")
    print(f"built the four demo guest disks in {time.monotonic() - started:.2f} s")
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


@pytest.fixture
def guest(sim, empty_conn, tmp_path):
    """A VM that is down with web01_os and db01_os as the demo seeds them (its boot disk web01_os)."""
    disks = {}
    for name in ("web01_os", "db01_os"):
        guest_images.build_disk(name, 64 * MiB, tmp_path / f"seeded-{name}.raw")
        disks[name] = add_disk(empty_conn, name=name, size=64 * MiB)
        upload(empty_conn, sim.ca_file, tmp_path / f"seeded-{name}.raw", disk_id=disks[name].id)
    return make_vm(empty_conn, "guest", disks=[disks["web01_os"], disks["db01_os"]]), disks


def test_it_rewrites_a_running_guests_file_into_the_active_layer(sim, empty_conn, guest, tmp_path):
    vm, disks = guest
    web, db = disks["web01_os"].id, disks["db01_os"].id
    with pytest.raises(RuntimeError, match="not plugged into a running VM: only a running guest changes its files"):
        sim.guest_write_file(vm.id, "p2", "/etc/hostname", b"guest\n")
    vm_service(empty_conn, vm.id).start()
    wait_for(lambda: vm_service(empty_conn, vm.id).get().status == types.VmStatus.UP, what="VM up")
    before = snapshot(empty_conn, vm.id, "as seeded")  # what the guest writes next goes to new layers

    sql = b"INSERT INTO orders VALUES (3, 'Carol', 9.99);\n" * 8000  # several hundred KiB
    sim.guest_write_file(vm.id, "p2", "/etc/hostname", b"guest\n")  # the VM's boot disk
    sim.guest_write_file(web, "p2", "/home/alice/notes.txt", b"Renewed.\n")  # keeps 0600 alice:alice
    sim.guest_write_file(web, "p2", "/srv/www/new page.html", b"<p>new</p>\n")  # a new file: 0644 root
    sim.guest_write_file(db, "vg_db01-root", "/var/lib/db/data.sql", sql)  # an LV of the guest's LVM
    refused = {
        (web, "p1", "/EFI/BOOT/BOOTX64.EFI"): "p1 of disk web01_os holds vfat; files are written in ext2/3/4",
        (web, "p7", "/etc/hostname"): r"the disk has no partition p7 \(it has: p1, p2\)",
        (web, "disk", "/etc/hostname"): "disk of disk web01_os holds no filesystem known to blkid",
        (db, "vg_db01-data", "/pg/PG_VERSION"): "vg_db01-data of disk db01_os holds xfs",
        (db, "vg_db01-swap", "/x"): r"no filesystem 'vg_db01-swap'.*it has: vg_db01-root, vg_db01-data",
        (web, "p2", "/nowhere/file"): "/nowhere is not a directory of the filesystem",
        (web, "p2", "/etc"): "/etc is not a regular file",
        (web, "p2", "/etc/escape"): "/etc/escape is not a regular file",  # a symlink: never followed
        (web, "p2", "etc/hostname"): "'etc/hostname' is not an absolute path to a file",
    }
    for (disk_id, key, path), message in refused.items():
        with pytest.raises(RuntimeError, match=message):
            sim.guest_write_file(disk_id, key, path, b"x")

    vm_service(empty_conn, vm.id).stop()  # the VM's qemu writes everything back
    layers = disk_snapshot_ids(empty_conn, before.id)
    for name, disk_id in (("web01_os", web), ("db01_os", db)):
        download(empty_conn, sim.ca_file, tmp_path / f"now-{name}.raw", disk_id=disk_id, fmt="raw", out_fmt="raw")
        before_raw = tmp_path / f"before-{name}.raw"
        download(empty_conn, sim.ca_file, before_raw, snapshot_id=layers[disk_id], fmt="raw", out_fmt="raw")
    changed = {
        "web01_os": {
            "p2": {
                "/etc/hostname": b"guest\n",
                "/home/alice/notes.txt": b"Renewed.\n",
                "/srv/www/new page.html": b"<p>new</p>\n",
            }
        },
        "db01_os": {"vg_db01-root": {"/var/lib/db/data.sql": sql}},
    }
    for name in ("web01_os", "db01_os"):
        assert_holds(tmp_path / f"now-{name}.raw", name, tmp_path, changed[name])
        assert_holds(tmp_path / f"before-{name}.raw", name, tmp_path)  # the snapshot's layer: as seeded
    assert subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.count(str(sim.state_dir)) == 0
