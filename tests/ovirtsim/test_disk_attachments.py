"""Disk snapshots and new disks attached to a backup proxy (a VM running here): real block devices in
the guest's /dev/disk/by-id, through ovirtsdk4 as a backup appliance calls the engine."""

import errno
import json
import os
import stat
import subprocess
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from ovirtsim import guest_devices
from tests.ovirtsim.helpers import MiB, add_disk, make_image, qemu_img, read_bytes, wait_for
from tests.ovirtsim.test_data_plane import make_vm, snapshot


def vm_service(conn, vm_id: str):
    return conn.system_service().vms_service().vm_service(vm_id)


def proxy01(conn) -> types.Vm:
    return conn.system_service().vms_service().list(search="name=proxy01")[0]


def attach_snapshot(conn, proxy_id: str, disk_id: str, snap_id: str, interface=types.DiskInterface.VIRTIO_SCSI):
    """What a backup appliance sends (ovirtsdk4 writes <disk id=...><snapshot id=.../></disk>)."""
    return (
        vm_service(conn, proxy_id)
        .disk_attachments_service()
        .add(
            types.DiskAttachment(
                disk=types.Disk(id=disk_id, snapshot=types.Snapshot(id=snap_id)),
                active=True,
                bootable=False,
                interface=interface,
                read_only=True,
            )
        )
    )


def detach(conn, vm_id: str, disk_id: str) -> None:
    vm_service(conn, vm_id).disk_attachments_service().attachment_service(disk_id).remove()


def left_over(name: str) -> dict:
    """Loop devices and mounts still there for a guest's device named `name` (machine-wide)."""
    listed = json.loads(subprocess.run(["losetup", "--list", "--json"], capture_output=True, text=True).stdout or "{}")
    loops = [d["name"] for d in listed.get("loopdevices", []) if name in (d.get("back-file") or "")]
    mounts = [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if name in line]
    return {"loops": loops, "mounts": mounts}


def source_vm(conn, name: str, disks: list[types.Disk]) -> types.Vm:
    """A VM in cluster Production (host1 runs it, as it runs proxy01), running."""
    vms = conn.system_service().vms_service()
    vm = vms.add(types.Vm(name=name, cluster=types.Cluster(name="Production")))
    for disk in disks:
        vms.vm_service(vm.id).disk_attachments_service().add(
            types.DiskAttachment(disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO_SCSI, active=True)
        )
    vms.vm_service(vm.id).start()
    wait_for(lambda: vms.vm_service(vm.id).get().status == types.VmStatus.UP, what="the source VM up")
    return vm


def drop(conn, vm_id: str) -> None:
    service = vm_service(conn, vm_id)
    if service.get().status != types.VmStatus.DOWN:
        service.stop()
    service.remove(detach_only=False)


def test_it_attaches_disk_snapshots_to_the_proxy_as_read_only_devices_of_the_chain_at_the_snapshot(
    conn, demo_sim, tmp_path
):
    cow = add_disk(conn, name="snapsrc_os", size=16 * MiB, sd_name="data-nfs")
    raw = add_disk(conn, name="snapsrc_data", size=8 * MiB, fmt="raw", sparse=False, sd_name="data-block")
    before = {cow.id: [(0x61, 0, MiB), (0x62, 5 * MiB, MiB)], raw.id: [(0x71, MiB, MiB)]}
    for disk_id, writes in before.items():
        for pattern, offset, length in writes:
            demo_sim.guest_write(disk_id, offset, bytes([pattern]) * length)
    vm = source_vm(conn, "snapsrc", [cow, raw])
    snap = snapshot(conn, vm.id, "for the proxy")  # live: the running VM's qemu takes the new layers
    # The guest goes on writing: the live disks change, their snapshots do not.
    demo_sim.guest_write(cow.id, 0, b"\x6f" * MiB)
    demo_sim.guest_write(raw.id, MiB, b"\x7f" * MiB)
    proxy = proxy01(conn)
    assert proxy.status == types.VmStatus.UP and proxy.virtio_scsi.enabled is True
    attach_snapshot(conn, proxy.id, cow.id, snap.id)
    attach_snapshot(conn, proxy.id, raw.id, snap.id, types.DiskInterface.VIRTIO)
    by_id = Path(demo_sim.proxy_device_dirs["proxy01"])
    links = {cow.id: by_id / f"scsi-0QEMU_QEMU_HARDDISK_{cow.id[:20]}", raw.id: by_id / f"virtio-{raw.id[:20]}"}
    try:
        listed = {a.id: a for a in vm_service(conn, proxy.id).disk_attachments_service().list()}
        assert (listed[cow.id].active, listed[cow.id].read_only, listed[cow.id].interface) == (
            True,
            True,
            types.DiskInterface.VIRTIO_SCSI,
        )
        assert listed[raw.id].disk.id == raw.id and listed[raw.id].interface == types.DiskInterface.VIRTIO
        for disk, size in ((cow, 16 * MiB), (raw, 8 * MiB)):
            device = os.path.realpath(links[disk.id])
            assert device.startswith("/dev/loop") and stat.S_ISBLK(os.stat(device).st_mode)
            assert subprocess.run(["blockdev", "--getro", device], capture_output=True, text=True).stdout == "1\n"
            fd = os.open(device, os.O_WRONLY)  # this kernel opens a read-only device for writing...
            try:
                with pytest.raises(OSError) as refused:
                    os.pwrite(fd, b"\xff" * 4096, 0)
                assert refused.value.errno == errno.EPERM  # ...and refuses the write
            finally:
                os.close(fd)
            expected = tmp_path / f"{disk.id}.qcow2"
            make_image(expected, size=size, writes=before[disk.id])
            compared = qemu_img("compare", "-f", "raw", "-F", "qcow2", device, str(expected))
            assert compared.returncode == 0, compared.stdout + compared.stderr

        # Any snapshot of the VM stays while one of its disk snapshots is attached elsewhere.
        snapshots = vm_service(conn, vm.id).snapshots_service()
        with pytest.raises(sdk.Error) as refused:
            snapshots.snapshot_service(snap.id).remove()
        assert refused.value.code == 409
        assert refused.value.fault.detail == (
            "[Cannot remove Snapshot. The following VM's disks snapshots are attached to other VMs "
            "(Disk Alias/Snapshot Description/VM attached to):\n\n "
            "snapsrc_os ,for the proxy, proxy01%nsnapsrc_data ,for the proxy, proxy01 "
            "\n\nPlease detach them from those VMs and try again.]"
        )
        with pytest.raises(sdk.Error, match="At least one of the VMs is not down") as refused:
            conn.system_service().disks_service().disk_service(cow.id).remove()
        assert refused.value.code == 409
        with pytest.raises(sdk.Error, match=r"Cannot remove VM\. VM is running\.") as refused:
            vm_service(conn, proxy.id).remove()
        assert refused.value.code == 409
    finally:
        for disk_id in links:
            detach(conn, proxy.id, disk_id)
    assert not any(link.exists() for link in links.values())
    for disk_id in links:
        assert left_over(f"snapshot-{disk_id}") == {"loops": [], "mounts": []}
    assert {a.id for a in vm_service(conn, proxy.id).disk_attachments_service().list()}.isdisjoint(links)
    snapshots.snapshot_service(snap.id).remove()  # detached: the merge may go on
    wait_for(lambda: snap.id not in {s.id for s in snapshots.list()}, what="the snapshot merged")
    drop(conn, vm.id)


def test_it_refuses_virtio_scsi_disks_to_a_vm_without_virtio_scsi(conn, demo_sim):
    vms = conn.system_service().vms_service()
    disk = add_disk(conn, name="noscsi_src", size=MiB, sd_name="data-nfs")
    source = vms.add(types.Vm(name="noscsi-src", cluster=types.Cluster(name="Production")))
    vms.vm_service(source.id).disk_attachments_service().add(
        types.DiskAttachment(disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO, active=True)
    )
    snap = snapshot(conn, source.id, "cold")
    appliance = vms.add(
        types.Vm(name="noscsi", cluster=types.Cluster(name="Production"), virtio_scsi=types.VirtioScsi(enabled=False))
    )
    try:
        assert vms.vm_service(appliance.id).get().virtio_scsi.enabled is False
        with pytest.raises(sdk.Error) as refused:
            attach_snapshot(conn, appliance.id, disk.id, snap.id, types.DiskInterface.VIRTIO_SCSI)
        assert refused.value.code == 409
        assert refused.value.fault.detail == "[Cannot attach Virtual Disk. VirtIO-SCSI is disabled for the VM]"
        assert vms.vm_service(appliance.id).disk_attachments_service().list() == []
        attach_snapshot(conn, appliance.id, disk.id, snap.id, types.DiskInterface.VIRTIO)  # virtio-blk is fine
        detach(conn, appliance.id, disk.id)
        # Enabled again, it cannot be disabled while a VirtIO-SCSI disk is plugged.
        vms.vm_service(appliance.id).update(types.Vm(virtio_scsi=types.VirtioScsi(enabled=True)))
        attach_snapshot(conn, appliance.id, disk.id, snap.id, types.DiskInterface.VIRTIO_SCSI)
        with pytest.raises(sdk.Error) as refused:
            vms.vm_service(appliance.id).update(types.Vm(virtio_scsi=types.VirtioScsi(enabled=False)))
        assert refused.value.fault.detail == (
            "[Cannot disable VirtIO-SCSI when disks with a VirtIO-SCSI interface are plugged into the VM.]"
        )
        detach(conn, appliance.id, disk.id)
    finally:
        vms.vm_service(appliance.id).remove()
        vms.vm_service(source.id).remove(detach_only=False)


def test_it_gives_the_proxy_a_writable_device_for_a_new_disk_whose_volume_keeps_the_writes(conn, demo_sim):
    disk = add_disk(conn, name="restore_target", size=8 * MiB, sd_name="data-nfs")
    proxy = proxy01(conn)
    vm_service(conn, proxy.id).disk_attachments_service().add(
        types.DiskAttachment(
            disk=types.Disk(id=disk.id),
            active=True,
            bootable=False,
            interface=types.DiskInterface.VIRTIO,
            read_only=False,
        )
    )
    link = Path(demo_sim.proxy_device_dirs["proxy01"]) / f"virtio-{disk.id[:20]}"
    # No two 512-byte blocks alike: a write landing at the wrong offset inside it shows.
    data = b"".join(n.to_bytes(4, "big") * 128 for n in range(MiB // 512))
    try:
        device = os.path.realpath(link)
        assert stat.S_ISBLK(os.stat(device).st_mode)
        fd = os.open(device, os.O_WRONLY)
        try:
            os.pwrite(fd, data, 3 * MiB)  # left in the page cache: the detach flushes it
        finally:
            os.close(fd)
    finally:
        detach(conn, proxy.id, disk.id)
    assert not link.exists() and left_over(disk.id) == {"loops": [], "mounts": []}
    (volume,) = [p for p in demo_sim.state_dir.glob(f"storage/*/images/{disk.id}/*") if p.suffix != ".meta"]
    assert read_bytes(volume, 3 * MiB, MiB) == data
    assert read_bytes(volume, 0, MiB) == b"\0" * MiB
    conn.system_service().disks_service().disk_service(disk.id).remove()


def qemu_children(pid: int) -> set[int]:
    """The qemu-storage-daemons a simulator process started (its VMs' qemus)."""
    found = set()
    for proc in Path("/proc").iterdir():
        try:
            status = (proc / "status").read_text() if proc.name.isdigit() else ""
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(pid) and fields.get("Name", "").startswith("qemu-storage"):
            found.add(int(proc.name))
    return found


def nothing_left(sim, pids: set[int]) -> None:
    guests = guest_devices.guests_dir(sim.state_dir)
    assert guest_devices.loops_under(guests) == [] and guest_devices.mounts_under(guests) == []
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), timeout=10, what="the qemus gone")


def test_it_leaves_no_loop_device_mount_or_qemu_behind_on_stop_or_when_killed(sim):
    conn = sim.connect()
    disk = add_disk(conn, name="held", size=4 * MiB)
    source = make_vm(conn, "source", disks=[disk])
    snap = snapshot(conn, source.id, "held")
    proxy = make_vm(conn, "proxy", disks=[], status="up")
    link = Path(sim.set_runs_here(proxy.id)) / f"virtio-{disk.id[:20]}"
    assert sim.proxy_device_dirs == {"proxy": str(link.parent)}
    attach_snapshot(conn, proxy.id, disk.id, snap.id, types.DiskInterface.VIRTIO)
    assert link.exists()
    conn.close()
    pids = qemu_children(sim.pid)
    guests = guest_devices.guests_dir(sim.state_dir)
    assert pids and guest_devices.loops_under(guests) and guest_devices.mounts_under(guests)
    sim.kill()
    nothing_left(sim, pids)

    sim.start()  # the proxy is still up: its qemu and its guest's device come back
    assert os.path.realpath(link).startswith("/dev/loop")
    pids = qemu_children(sim.pid)
    sim.stop()
    assert not link.exists()
    nothing_left(sim, pids)


def test_it_detaches_as_the_engine_does(conn, demo_sim):
    """Plugged only when asked; a plugged disk of a running VM hot-unplugged on detach; a disk with
    snapshots neither detached nor kept by a VM removal."""
    kept = add_disk(conn, name="detach_kept", size=MiB, sd_name="data-nfs")
    plugged = add_disk(conn, name="detach_plugged", size=MiB, sd_name="data-nfs")
    vm = source_vm(conn, "detacher", [kept])
    attachments = vm_service(conn, vm.id).disk_attachments_service()
    try:
        added = attachments.add(
            types.DiskAttachment(disk=types.Disk(id=plugged.id), interface=types.DiskInterface.VIRTIO)
        )
        assert added.active is False  # `active` left out: attached, not plugged
        attachments.attachment_service(plugged.id).update(types.DiskAttachment(active=True))
        demo_sim.guest_write(plugged.id, 0, b"\x42" * 512)  # through the VM's qemu
        attachments.attachment_service(plugged.id).remove()  # hot-unplugged, as DetachDiskFromVm does
        assert {a.id for a in attachments.list()} == {kept.id}

        snapshot(conn, vm.id, "pins the disk")
        with pytest.raises(sdk.Error) as refused:
            attachments.attachment_service(kept.id).remove()
        assert refused.value.code == 409 and refused.value.fault.detail == (
            "[Cannot detach Virtual Disk. The disk is already configured in a snapshot. "
            "In order to detach it, remove the disk's snapshots.]"
        )
        vm_service(conn, vm.id).stop()
        with pytest.raises(sdk.Error) as refused:
            vm_service(conn, vm.id).remove(detach_only=True)
        assert refused.value.fault.detail == "[Cannot remove VM with detaching disks, snapshots exist.]"
    finally:
        drop(conn, vm.id)
        conn.system_service().disks_service().disk_service(plugged.id).remove()
