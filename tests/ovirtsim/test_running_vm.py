"""A running VM's disks are held by its own qemu: what the engine does to them goes through it."""

import json
import socket
import subprocess

import ovirtsdk4.types as types

from ovirtsim import Simulator, qemu
from tests.helpers import processes_using
from tests.ovirtsim.helpers import MiB, add_disk, download, wait_for
from tests.ovirtsim.test_data_plane import make_vm, snapshot, uploaded_disk


def volumes(sim, disk_id: str) -> dict[str, object]:
    """volume id -> path of a disk's volumes on the simulator's storage."""
    return {p.name: p for p in sim.state_dir.glob(f"storage/*/images/{disk_id}/*") if not p.name.endswith(".meta")}


def held_by_a_process(path) -> bool:
    """True when a qemu holds the image for writing (qemu-img without -U cannot open it then)."""
    result = subprocess.run(["qemu-img", "info", str(path)], capture_output=True, text=True)
    return result.returncode != 0 and "lock" in result.stderr


def dirty_ranges(path, bitmap: str, tmp_path) -> list[tuple[int, int]]:
    """The ranges a persistent bitmap marks dirty, read as a backup reads them (NBD meta context)."""
    server = qemu.NbdServer(path, tmp_path / "bitmap.sock", fmt="qcow2", bitmap=bitmap)
    server.start()
    try:
        opts = f"driver=nbd,server.type=unix,server.path={server.socket},x-dirty-bitmap=qemu:dirty-bitmap:{bitmap}"
        extents = json.loads(qemu.run("qemu-img", "map", "--output=json", "--image-opts", opts))
    finally:
        server.stop()
    # With x-dirty-bitmap, qemu-img map shows dirty blocks as "data": false.
    return [(e["start"], e["length"]) for e in extents if not e["data"]]


def vm_service(conn, vm_id: str):
    return conn.system_service().vms_service().vm_service(vm_id)


def stop(conn, vm_id: str) -> None:
    vm_service(conn, vm_id).stop()
    assert vm_service(conn, vm_id).get().status == types.VmStatus.DOWN


def test_it_holds_a_running_vms_disks_in_its_qemu_across_restarts(tmp_path):
    with Simulator(tmp_path / "engine", seed="empty") as sim:
        conn = sim.connect()
        disk, _ = uploaded_disk(conn, sim, tmp_path, "held", [(0x11, 0, MiB)])
        (path,) = volumes(sim, disk.id).values()
        vm = make_vm(conn, "held", disks=[disk], status="up")
        assert held_by_a_process(path)
        sim.guest_write(vm.id, MiB, b"\x12" * MiB)
        conn.close()

        sim.stop()  # the simulator goes down with the VM recorded as up...
        assert not held_by_a_process(path)
        sim.start()  # ...and its qemu comes back
        conn = sim.connect()
        try:
            assert vm_service(conn, vm.id).get().status == types.VmStatus.UP
            assert held_by_a_process(path)
            sim.guest_write(vm.id, 2 * MiB, b"\x13" * MiB)
            stop(conn, vm.id)
            assert not held_by_a_process(path)
            out = tmp_path / "now.raw"
            download(conn, sim.ca_file, out, disk_id=disk.id, fmt="raw", out_fmt="raw")
        finally:
            conn.close()
    data = out.read_bytes()
    assert data[: 3 * MiB] == b"\x11" * MiB + b"\x12" * MiB + b"\x13" * MiB


def test_it_carries_checkpoint_bitmaps_through_live_snapshots_and_merges(sim, empty_conn, tmp_path):
    disk = add_disk(empty_conn, name="cbt", size=16 * MiB, fmt="cow", backup="incremental")
    (base_id, base), *_ = volumes(sim, disk.id).items()
    qemu.add_bitmap(base, "cp1")  # a checkpoint taken while the VM was down
    vm = make_vm(empty_conn, "cbt", disks=[disk], status="up")
    snap = snapshot(empty_conn, vm.id, "live")
    top = next(p for vid, p in volumes(sim, disk.id).items() if vid != base_id)
    sim.guest_write(vm.id, 0, b"\x21" * MiB)
    snapshots = vm_service(empty_conn, vm.id).snapshots_service()
    snapshots.snapshot_service(snap.id).remove()
    wait_for(lambda: snap.id not in {s.id for s in snapshots.list()}, what="snapshot merged")
    assert not top.exists()
    stop(empty_conn, vm.id)
    # The write made on the snapshot's layer is in base's checkpoint bitmap after the live merge.
    (bitmap,) = qemu.bitmaps(base)
    assert bitmap["name"] == "cp1" and bitmap["flags"] == ["auto"]
    assert dirty_ranges(base, "cp1", tmp_path) == [(0, MiB)]
    # Cold snapshot and merge (VM down) carry the bitmap too, as vdsm does.
    cold = snapshot(empty_conn, vm.id, "cold")
    cold_top = next(p for vid, p in volumes(sim, disk.id).items() if vid != base_id)
    assert [b["name"] for b in qemu.bitmaps(cold_top)] == ["cp1"]
    snapshots.snapshot_service(cold.id).remove()
    wait_for(lambda: cold.id not in {s.id for s in snapshots.list()}, what="snapshot merged")
    assert [b["name"] for b in qemu.bitmaps(base)] == ["cp1"]


def test_it_hot_plugs_and_unplugs_disks_of_a_running_vm(sim, empty_conn, tmp_path):
    first = add_disk(empty_conn, name="first", size=8 * MiB)
    vm = make_vm(empty_conn, "plug", disks=[first], status="up")
    attachments = vm_service(empty_conn, vm.id).disk_attachments_service()
    second = add_disk(empty_conn, name="second", size=8 * MiB)
    attachments.add(
        types.DiskAttachment(disk=types.Disk(id=second.id), interface=types.DiskInterface.VIRTIO, active=True)
    )
    (path,) = volumes(sim, second.id).values()
    assert held_by_a_process(path)
    sim.guest_write(second.id, 0, b"\x31" * 4096)
    attachments.attachment_service(second.id).update(types.DiskAttachment(active=False))
    assert not held_by_a_process(path)
    qemu.run("qemu-io", "-f", "qcow2", "-c", "read -P 0x31 0 4096", str(path))
    attachments.attachment_service(second.id).update(types.DiskAttachment(active=True))
    assert held_by_a_process(path)


def listening(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


def test_it_crashes_a_running_vms_qemu_with_a_killed_engine(tmp_path):
    """A killed simulator takes its VMs' qemu with it, as a host losing power: bitmaps left in use."""
    with Simulator(tmp_path / "engine", seed="empty") as sim:
        conn = sim.connect()
        disk = add_disk(conn, name="k", size=8 * MiB, backup="incremental")
        (path,) = volumes(sim, disk.id).values()
        qemu.add_bitmap(path, "cp1")
        vm = make_vm(conn, "killed", disks=[disk], status="up")
        sim.guest_write(vm.id, 0, b"\x41" * 4096)
        floating = add_disk(conn, name="f", size=8 * MiB)
        conn.close()
        sshds = [(h["address"], h["port"]) for h in sim.hosts()]
        sim.kill()
        assert not sim.running
        wait_for(lambda: not held_by_a_process(path), what="the VM's qemu to die with the engine")
        wait_for(lambda: not any(listening(*a) for a in sshds), what="the hosts' sshds to die with the engine")
        imageio_conf = str(tmp_path / "engine" / "imageio")
        wait_for(lambda: not processes_using(imageio_conf), what="the imageio daemon to die with the engine")
        assert "in-use" in qemu.bitmaps(path)[0]["flags"]
        sim.start()
        conn = sim.connect()
        try:
            assert vm_service(conn, vm.id).get().status == types.VmStatus.UP
            sim.guest_write(vm.id, 4096, b"\x42" * 4096)
            # The restarted engine's imageio listens on a port of its own, which transfers now name.
            download(conn, sim.ca_file, tmp_path / "f.raw", disk_id=floating.id, fmt="raw", out_fmt="raw")
            stop(conn, vm.id)
        finally:
            conn.close()
    qemu.run("qemu-io", "-f", "qcow2", "-c", "read -P 0x41 0 4096", "-c", "read -P 0x42 4096 4096", str(path))
    # Stored again by a clean quit, but still inconsistent: it missed writes while nobody recorded them.
    assert "in-use" in qemu.bitmaps(path)[0]["flags"]


def test_it_crashes_a_vm_leaving_its_checkpoints_inconsistent(tmp_path):
    with Simulator(tmp_path / "engine", seed="empty", in_process=True) as sim, sim.connect() as conn:
        engine = sim._service.engine
        disk = add_disk(conn, name="c", size=8 * MiB, backup="incremental")
        vm = make_vm(conn, "crash", disks=[disk], status="up")
        engine.vm_qemus[vm.id].add_bitmap(disk.id, "cp1")
        vm_service(conn, vm.id).stop()  # stored
        vm_service(conn, vm.id).start()
        wait_for(lambda: vm_service(conn, vm.id).get().status == types.VmStatus.UP)
        engine.crash_vm(vm.id)
        assert vm_service(conn, vm.id).get().status == types.VmStatus.DOWN
        vm_service(conn, vm.id).start()
        wait_for(lambda: vm_service(conn, vm.id).get().status == types.VmStatus.UP)
        assert engine.qemu_of_disk(disk.id).bitmaps(disk.id) == [
            {"name": "cp1", "recording": False, "inconsistent": True}
        ]
        events = conn.system_service().events_service().list(search="severity=error")
        assert any("qemu process terminated unexpectedly" in e.description for e in events)
