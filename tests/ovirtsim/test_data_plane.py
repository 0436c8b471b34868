"""Image transfers, snapshots and OVF, checked with the real SDK, imageio client and qemu-img."""

import subprocess
import threading

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest
from ovirt_imageio import client

from tests.ovirtsim.helpers import (
    MiB,
    add_disk,
    download,
    end_transfer,
    identical,
    make_image,
    read_bytes,
    remote_checksum,
    start_transfer,
    upload,
    wait_for,
)


def make_vm(conn, name: str, *, disks: list[types.Disk], status: str = "down") -> types.Vm:
    vms = conn.system_service().vms_service()
    vm = vms.add(
        types.Vm(
            name=name,
            cluster=types.Cluster(name="Default"),
            memory=2**30,
            cpu=types.Cpu(topology=types.CpuTopology(sockets=1, cores=2, threads=1)),
            os=types.OperatingSystem(type="rhel_9x64"),
        )
    )
    for n, disk in enumerate(disks):
        vms.vm_service(vm.id).disk_attachments_service().add(
            types.DiskAttachment(
                disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO_SCSI, bootable=n == 0, active=True
            )
        )
    if status == "up":
        vms.vm_service(vm.id).start()
        wait_for(lambda: vms.vm_service(vm.id).get().status == types.VmStatus.UP)
    return vms.vm_service(vm.id).get()


def uploaded_disk(conn, sim, tmp_path, name: str, writes, *, size=32 * MiB, fmt="cow", upload_fmt="raw"):
    source = tmp_path / f"{name}.qcow2"
    make_image(source, size=size, writes=writes)
    disk = add_disk(conn, name=name, size=size, fmt=fmt)
    upload(conn, sim.ca_file, source, disk_id=disk.id, fmt=upload_fmt)
    return disk, source


def snapshot(conn, vm_id: str, description: str, **query) -> types.Snapshot:
    snapshots = conn.system_service().vms_service().vm_service(vm_id).snapshots_service()
    snap = snapshots.add(types.Snapshot(description=description, persist_memorystate=False), query=query or None)
    assert snap.snapshot_status == types.SnapshotStatus.LOCKED
    wait_for(
        lambda: snapshots.snapshot_service(snap.id).get().snapshot_status == types.SnapshotStatus.OK, what="snapshot ok"
    )
    return snapshots.snapshot_service(snap.id).get()


def disk_snapshot_ids(conn, snap_id: str) -> dict[str, str]:
    """disk id -> disk snapshot id of one VM snapshot, as a backup tool finds them."""
    result = {}
    for sd in conn.system_service().storage_domains_service().list(search="type=data"):
        for ds in (
            conn.system_service()
            .storage_domains_service()
            .storage_domain_service(sd.id)
            .disk_snapshots_service()
            .list()
        ):
            if ds.snapshot is not None and ds.snapshot.id == snap_id:
                result[ds.disk.id] = ds.id
    return result


def test_it_uploads_qcow2_and_downloads_it_as_raw_and_as_qcow2(sim, empty_conn, tmp_path):
    writes = [(0x41, 0, MiB), (0x42, 5 * MiB, 3 * MiB), (0x43, 31 * MiB, MiB)]
    disk, source = uploaded_disk(empty_conn, sim, tmp_path, "up", writes)
    assert empty_conn.system_service().disks_service().disk_service(disk.id).get().status == types.DiskStatus.OK
    as_qcow2, as_raw = tmp_path / "down.qcow2", tmp_path / "down.raw"
    download(empty_conn, sim.ca_file, as_qcow2, disk_id=disk.id, fmt="raw", out_fmt="qcow2")
    download(empty_conn, sim.ca_file, as_raw, disk_id=disk.id, fmt="raw", out_fmt="raw")
    assert identical(source, as_qcow2)
    assert identical(source, as_raw)
    # Zero extents were skipped: the qcow2 holds about the 5 MiB written, not 32 MiB.
    assert as_qcow2.stat().st_blocks * 512 < 8 * MiB


def test_it_uploads_and_downloads_a_qcow2_file_as_is(sim, empty_conn, tmp_path):
    source = tmp_path / "src.qcow2"
    make_image(source, size=16 * MiB, writes=[(0x51, MiB, MiB)])
    disk = add_disk(empty_conn, name="cow", size=16 * MiB, fmt="cow")
    upload(empty_conn, sim.ca_file, source, disk_id=disk.id, fmt="cow")
    copy = tmp_path / "copy.qcow2"
    transfer = start_transfer(empty_conn, disk_id=disk.id, fmt="cow")
    with client.ImageioClient(transfer.transfer_url, sim.ca_file) as io:
        data = bytearray(io.size())
        io.read(0, memoryview(data))
    end_transfer(empty_conn, transfer)
    copy.write_bytes(data)
    assert identical(source, copy)


def test_it_serves_checksums_through_imageio(sim, empty_conn, tmp_path):
    disk, source = uploaded_disk(empty_conn, sim, tmp_path, "sum", [(0x61, 0, 2 * MiB)])
    transfer = start_transfer(empty_conn, disk_id=disk.id, fmt="raw")
    try:
        remote = remote_checksum(transfer.transfer_url, sim.ca_file)
    finally:
        end_transfer(empty_conn, transfer)
    local = client.checksum(str(source), block_size=remote["block_size"], algorithm=remote["algorithm"])
    assert remote["checksum"] == local["checksum"]


def test_it_locks_the_disk_while_a_transfer_runs(sim, empty_conn, tmp_path):
    disk, _ = uploaded_disk(empty_conn, sim, tmp_path, "lock", [(0x71, 0, MiB)])
    transfer = start_transfer(empty_conn, disk_id=disk.id)
    disks = empty_conn.system_service().disks_service()
    assert disks.disk_service(disk.id).get().status == types.DiskStatus.LOCKED
    with pytest.raises(sdk.Error, match="is locked") as info:
        start_transfer(empty_conn, disk_id=disk.id)
    assert info.value.code == 409
    with pytest.raises(sdk.Error, match="is locked"):
        disks.disk_service(disk.id).remove()
    assert end_transfer(empty_conn, transfer, cancel=True) == types.ImageTransferPhase.FINISHED_FAILURE
    assert disks.disk_service(disk.id).get().status == types.DiskStatus.OK


def test_it_removes_the_disk_of_a_cancelled_upload(sim, empty_conn):
    disk = add_disk(empty_conn, name="cancelled", size=MiB)
    transfer = start_transfer(empty_conn, disk_id=disk.id, direction="upload")
    end_transfer(empty_conn, transfer, cancel=True)
    with pytest.raises(sdk.NotFoundError):
        empty_conn.system_service().disks_service().disk_service(disk.id).get()


def test_it_refuses_to_download_a_disk_of_a_running_vm(sim, empty_conn, tmp_path):
    disk, _ = uploaded_disk(empty_conn, sim, tmp_path, "running", [(0x72, 0, MiB)])
    make_vm(empty_conn, "running", disks=[disk], status="up")
    with pytest.raises(sdk.Error, match="running VM") as info:
        start_transfer(empty_conn, disk_id=disk.id)
    assert info.value.code == 409


def test_it_lists_a_disks_own_disk_snapshots(sim, empty_conn, tmp_path):
    disk, _ = uploaded_disk(empty_conn, sim, tmp_path, "own", [(0x73, 0, MiB)])
    vm = make_vm(empty_conn, "own", disks=[disk], status="up")
    snap = snapshot(empty_conn, vm.id, "first")
    service = empty_conn.system_service().disks_service().disk_service(disk.id).disk_snapshots_service()

    (older,) = service.list()
    assert (older.disk.id, older.snapshot.id, older.parent) == (disk.id, snap.id, None)
    assert older.href == f"/ovirt-engine/api/disks/{disk.id}/disksnapshots/{older.id}"
    first, active = service.list(include_active=True)
    assert first.id == older.id and active.parent.id == older.id
    snapshots = empty_conn.system_service().vms_service().vm_service(vm.id).snapshots_service().list()
    assert active.snapshot.id == next(s.id for s in snapshots if s.snapshot_type == types.SnapshotType.ACTIVE)
    assert service.snapshot_service(older.id).get().id == older.id
    # The running guest writes the active volume: it cannot be read as a snapshot meanwhile.
    with pytest.raises(sdk.Error, match="running VM") as info:
        start_transfer(empty_conn, snapshot_id=active.id)
    assert info.value.code == 409


def test_it_snapshots_writes_and_downloads_layers(sim, empty_conn, tmp_path):
    disk, source = uploaded_disk(empty_conn, sim, tmp_path, "chain", [(0x11, 0, 4 * MiB)])
    vm = make_vm(empty_conn, "chain", disks=[disk], status="up")

    snap1 = snapshot(empty_conn, vm.id, "first")
    sim.guest_write(disk.id, 2 * MiB, b"\x22" * MiB)  # overwrites part of the base
    sim.guest_write(disk.id, 20 * MiB, b"\x23" * MiB)
    snap2 = snapshot(empty_conn, vm.id, "second")
    sim.guest_write(vm.id, 30 * MiB, b"\x24" * MiB)  # the boot disk, after the second snapshot

    ids1, ids2 = disk_snapshot_ids(empty_conn, snap1.id), disk_snapshot_ids(empty_conn, snap2.id)
    assert set(ids1) == set(ids2) == {disk.id}
    # The whole chain under the first snapshot is the uploaded image.
    full1 = tmp_path / "full1.qcow2"
    download(empty_conn, sim.ca_file, full1, snapshot_id=ids1[disk.id], fmt="raw")
    assert identical(source, full1)
    # Shallow: only what the guest wrote between the snapshots, placed on the previous backup.
    inc2 = tmp_path / "inc2.qcow2"
    download(
        empty_conn, sim.ca_file, inc2, snapshot_id=ids2[disk.id], fmt="raw", shallow=True, backing_file="full1.qcow2"
    )
    assert read_bytes(inc2, 2 * MiB, MiB) == b"\x22" * MiB
    assert read_bytes(inc2, 0, MiB) == b"\x11" * MiB  # from the backing full
    assert read_bytes(inc2, 30 * MiB, MiB) == bytes(MiB)  # written after the second snapshot
    allocated = sum(
        1
        for line in subprocess.run(
            ["qemu-img", "map", "--output=json", str(inc2)], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        if '"depth": 0' in line and '"data": true' in line
    )
    assert allocated >= 1
    layer_size = inc2.stat().st_blocks * 512
    assert layer_size < 4 * MiB, "a shallow download holds only the layer's 2 MiB"
    # The whole chain under the second snapshot.
    full2 = tmp_path / "full2.raw"
    download(empty_conn, sim.ca_file, full2, snapshot_id=ids2[disk.id], fmt="raw", out_fmt="raw")
    assert identical(inc2, full2)


def test_it_merges_a_removed_snapshot_into_the_chain(sim, empty_conn, tmp_path):
    disk, _ = uploaded_disk(empty_conn, sim, tmp_path, "merge", [(0x31, 0, 2 * MiB)])
    vm = make_vm(empty_conn, "merge", disks=[disk], status="up")
    snap1 = snapshot(empty_conn, vm.id, "one")
    sim.guest_write(disk.id, MiB, b"\x32" * MiB)
    snap2 = snapshot(empty_conn, vm.id, "two")
    sim.guest_write(disk.id, 10 * MiB, b"\x33" * MiB)
    snapshots = empty_conn.system_service().vms_service().vm_service(vm.id).snapshots_service()

    snapshots.snapshot_service(snap1.id).remove()
    wait_for(lambda: snap1.id not in {s.id for s in snapshots.list()}, what="snapshot merged")
    disks = empty_conn.system_service().disks_service()
    assert disks.disk_service(disk.id).get().status == types.DiskStatus.OK
    # The second snapshot still reads as the disk did when it was taken.
    at_snap2 = tmp_path / "snap2.raw"
    download(
        empty_conn,
        sim.ca_file,
        at_snap2,
        snapshot_id=disk_snapshot_ids(empty_conn, snap2.id)[disk.id],
        fmt="raw",
        out_fmt="raw",
    )
    data = at_snap2.read_bytes()
    assert data[:MiB] == b"\x31" * MiB and data[MiB : 2 * MiB] == b"\x32" * MiB
    assert data[10 * MiB : 11 * MiB] == bytes(MiB)

    snapshots.snapshot_service(snap2.id).remove()
    wait_for(lambda: [s.snapshot_type for s in snapshots.list()] == [types.SnapshotType.ACTIVE])
    empty_conn.system_service().vms_service().vm_service(vm.id).stop()
    now = tmp_path / "now.raw"
    download(empty_conn, sim.ca_file, now, disk_id=disk.id, fmt="raw", out_fmt="raw")
    data = now.read_bytes()
    assert data[MiB : 2 * MiB] == b"\x32" * MiB and data[10 * MiB : 11 * MiB] == b"\x33" * MiB


def test_it_keeps_guest_writes_during_a_merge(sim, empty_conn, tmp_path):
    disk, _ = uploaded_disk(empty_conn, sim, tmp_path, "live", [(0x41, 0, 8 * MiB)])
    vm = make_vm(empty_conn, "live", disks=[disk], status="up")
    first = snapshot(empty_conn, vm.id, "one")
    sim.guest_write(disk.id, 0, b"\x42" * 16 * MiB)  # a layer big enough that its merge takes a while
    snapshot(empty_conn, vm.id, "two")
    snapshots = empty_conn.system_service().vms_service().vm_service(vm.id).snapshots_service()

    snapshots.snapshot_service(first.id).remove()
    # The guest keeps running while the engine merges: none of its writes may fail or be lost.
    for n in range(8):
        sim.guest_write(disk.id, (16 + n) * MiB, bytes([0x50 + n]) * MiB)
    wait_for(lambda: first.id not in {s.id for s in snapshots.list()}, what="snapshot merged")
    assert empty_conn.system_service().disks_service().disk_service(disk.id).get().status == types.DiskStatus.OK
    empty_conn.system_service().vms_service().vm_service(vm.id).stop()
    now = tmp_path / "now.raw"
    download(empty_conn, sim.ca_file, now, disk_id=disk.id, fmt="raw", out_fmt="raw")
    data = now.read_bytes()
    assert data[: 16 * MiB] == b"\x42" * 16 * MiB
    for n in range(8):
        assert data[(16 + n) * MiB : (17 + n) * MiB] == bytes([0x50 + n]) * MiB, f"write {n} lost"


def test_it_refuses_a_second_snapshot_while_one_is_in_progress(sim, empty_conn, tmp_path):
    disk, _ = uploaded_disk(empty_conn, sim, tmp_path, "busy", [(0x34, 0, MiB)])
    vm = make_vm(empty_conn, "busy", disks=[disk])
    snapshots = empty_conn.system_service().vms_service().vm_service(vm.id).snapshots_service()
    snapshots.add(types.Snapshot(description="a"))
    with pytest.raises(sdk.Error, match="currently being created") as info:
        snapshots.add(types.Snapshot(description="b"))
    assert info.value.code == 409


def test_it_fails_a_consistent_snapshot_without_a_guest_agent(conn):
    vms = conn.system_service().vms_service()
    legacy = vms.list(search="name=legacy01")[0]
    snapshots = vms.vm_service(legacy.id).snapshots_service()
    # Other tests may have left kept snapshots. The Active VM's id changes with every snapshot taken.
    before = {s.id for s in snapshots.list() if s.snapshot_type == types.SnapshotType.REGULAR}
    with pytest.raises(sdk.Error, match="Failed to freeze guest filesystems") as info:
        snapshots.add(types.Snapshot(description="quiesced"), query={"require_consistency": "true"})
    assert info.value.code == 409
    snap = snapshot(conn, legacy.id, "crash-consistent")
    assert snap.snapshot_status == types.SnapshotStatus.OK
    snapshots.snapshot_service(snap.id).remove()
    wait_for(
        lambda: {s.id for s in snapshots.list() if s.snapshot_type == types.SnapshotType.REGULAR} == before,
        what="snapshot removed",
    )


def test_it_fails_the_next_snapshot_on_the_switch(sim, empty_conn, tmp_path):
    disk, _ = uploaded_disk(empty_conn, sim, tmp_path, "failsnap", [(0x35, 0, MiB)])
    vm = make_vm(empty_conn, "failsnap", disks=[disk])
    sim.set_faults(fail_next_snapshot=True)
    snapshots = empty_conn.system_service().vms_service().vm_service(vm.id).snapshots_service()
    (active,) = snapshots.list()
    snap = snapshots.add(types.Snapshot(description="doomed"))
    # As on the engine, the new snapshot took the Active VM's id; failed, it gives it back.
    assert snap.id == active.id

    def gone():
        current = snapshots.snapshot_service(snap.id).get()
        return current.snapshot_type == types.SnapshotType.ACTIVE

    wait_for(gone, what="failed snapshot to disappear")
    assert [s.snapshot_type for s in snapshots.list()] == [types.SnapshotType.ACTIVE]
    events = empty_conn.system_service().events_service().list(max=5)
    assert any("Failed to complete snapshot 'doomed'" in e.description for e in events)
    assert empty_conn.system_service().disks_service().disk_service(disk.id).get().status == types.DiskStatus.OK
    assert snapshot(empty_conn, vm.id, "next one works").snapshot_status == types.SnapshotStatus.OK


def test_it_pauses_the_next_transfer_on_the_switch(sim, empty_conn, tmp_path):
    disk, _ = uploaded_disk(empty_conn, sim, tmp_path, "paused", [(0x36, 0, MiB)])
    sim.set_faults(pause_next_transfer=True)
    transfer = start_transfer(empty_conn, disk_id=disk.id)
    assert transfer.phase == types.ImageTransferPhase.PAUSED_SYSTEM
    assert transfer.transfer_url is None
    assert end_transfer(empty_conn, transfer, cancel=True) == types.ImageTransferPhase.FINISHED_FAILURE
    assert empty_conn.system_service().disks_service().disk_service(disk.id).get().status == types.DiskStatus.OK


def test_it_cancels_an_idle_transfer_after_its_inactivity_timeout(sim, empty_conn, tmp_path):
    disk, _ = uploaded_disk(empty_conn, sim, tmp_path, "idle", [(0x37, 0, MiB)])
    transfer = start_transfer(empty_conn, disk_id=disk.id, inactivity_timeout=1, timeout_policy="cancel")
    service = empty_conn.system_service().image_transfers_service().image_transfer_service(transfer.id)
    wait_for(
        lambda: service.get().phase == types.ImageTransferPhase.FINISHED_FAILURE,
        timeout=15,
        what="idle transfer cancelled",
    )
    assert empty_conn.system_service().disks_service().disk_service(disk.id).get().status == types.DiskStatus.OK


def test_it_serves_several_clients_at_once(sim, empty_conn, tmp_path):
    sources = [uploaded_disk(empty_conn, sim, tmp_path, f"par{n}", [(0x80 + n, n * MiB, 4 * MiB)]) for n in range(3)]
    errors, results = [], {}

    def fetch(n, disk_id):
        try:
            with sim.connect() as connection:
                out = tmp_path / f"par{n}.out.qcow2"
                download(connection, sim.ca_file, out, disk_id=disk_id)
                results[n] = out
        except Exception as e:  # collected for the assertion below
            errors.append(e)

    threads = [threading.Thread(target=fetch, args=(n, d.id)) for n, (d, _) in enumerate(sources)]
    for t in threads:
        t.start()
    # The control plane answers while the data moves.
    for _ in range(10):
        empty_conn.system_service().vms_service().list()
    for t in threads:
        t.join()
    assert errors == []
    for n, (_, source) in enumerate(sources):
        assert identical(source, results[n])


def test_it_round_trips_a_vm_through_its_ovf(sim, empty_conn, tmp_path):
    disk_a, source_a = uploaded_disk(empty_conn, sim, tmp_path, "ovf_os", [(0x91, 0, MiB)])
    disk_b, source_b = uploaded_disk(empty_conn, sim, tmp_path, "ovf_data", [(0x92, 0, MiB)], size=16 * MiB, fmt="raw")
    vm = make_vm(empty_conn, "ovfsource", disks=[disk_a, disk_b])
    vms = empty_conn.system_service().vms_service()
    full = vms.vm_service(vm.id).get(all_content=True)
    assert full.initialization.configuration.type == types.ConfigurationType.OVF
    ovf_text = full.initialization.configuration.data
    assert "ovf:Envelope" in ovf_text and "ovf_os" in ovf_text

    # Restore as a backup tool does: new disks with the same ids are not possible while the source
    # exists, so create new disks, point the OVF at them, and import it as a clone.
    replacements = {}
    for old, source, fmt in ((disk_a, source_a, "cow"), (disk_b, source_b, "raw")):
        new = add_disk(empty_conn, name=f"restored_{old.alias}", size=old.provisioned_size, fmt=fmt)
        upload(empty_conn, sim.ca_file, source, disk_id=new.id)
        replacements[old.id] = new.id
    for old, new in replacements.items():
        ovf_text = ovf_text.replace(old, new)
    restored = vms.add(
        types.Vm(
            name="ovfcopy",
            cluster=types.Cluster(name="Default"),
            initialization=types.Initialization(
                configuration=types.Configuration(type=types.ConfigurationType.OVF, data=ovf_text)
            ),
        ),
        clone=True,
    )
    assert restored.id != vm.id
    restored = vms.vm_service(restored.id).get(follow="disk_attachments.disk")
    assert (restored.memory, restored.cpu.topology.cores, restored.os.type) == (2**30, 2, "rhel_9x64")
    by_disk = {a.disk.id: a for a in restored.disk_attachments}
    assert set(by_disk) == set(replacements.values())
    assert by_disk[replacements[disk_a.id]].bootable is True
    assert by_disk[replacements[disk_b.id]].disk.provisioned_size == 16 * MiB
    # Without clone the OVF's VM id is kept, which the source still has.
    with pytest.raises(sdk.Error, match="same identifier") as info:
        vms.add(
            types.Vm(
                cluster=types.Cluster(name="Default"),
                name="again",
                initialization=types.Initialization(
                    configuration=types.Configuration(type=types.ConfigurationType.OVF, data=ovf_text)
                ),
            )
        )
    assert info.value.code == 409


def test_it_refuses_a_malformed_ovf(empty_conn):
    vms = empty_conn.system_service().vms_service()
    with pytest.raises(sdk.Error, match="Failed to parse the OVF") as info:
        vms.add(
            types.Vm(
                cluster=types.Cluster(name="Default"),
                initialization=types.Initialization(
                    configuration=types.Configuration(type=types.ConfigurationType.OVF, data="<ovf:Envelope")
                ),
            )
        )
    assert info.value.code == 400


def test_it_keeps_a_snapshots_ovf(sim, empty_conn, tmp_path):
    disk, _ = uploaded_disk(empty_conn, sim, tmp_path, "snapovf", [(0x93, 0, MiB)])
    vm = make_vm(empty_conn, "snapovf", disks=[disk])
    snap = snapshot(empty_conn, vm.id, "with ovf")
    service = empty_conn.system_service().vms_service().vm_service(vm.id).snapshots_service().snapshot_service(snap.id)
    # SnapshotService.get has no all_content parameter; clients pass it as a query parameter.
    assert "snapovf" in service.get(query={"all_content": "true"}).initialization.configuration.data
    assert [d.id for d in service.disks_service().list()] == [disk.id]


def test_it_serves_ovirt_img_unchanged(sim, empty_conn, tmp_path):
    """ovirt-img, imageio's own command line client for real engines, downloads a disk from us."""
    import subprocess

    disk, source = uploaded_disk(empty_conn, sim, tmp_path, "ovirtimg", [(0x94, 3 * MiB, 2 * MiB)])
    out = tmp_path / "ovirt-img.qcow2"
    result = subprocess.run(
        sim.ovirt_img("download-disk", "-f", "qcow2", disk.id, str(out)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert identical(source, out)


def test_it_says_why_a_guest_write_was_refused(demo_sim, conn):
    vm = conn.system_service().vms_service().list(search="name=test01")[0]
    with pytest.raises(RuntimeError, match=r"guest-write failed \(400\).*outside disk"):
        demo_sim.guest_write(vm.id, 2**50, b"x")


def test_it_leaves_a_snapshot_whose_removal_failed_without_the_disks_it_merged(demo_sim, conn):
    """A removal that merged one disk and failed on the other (or was cut short by an engine restart)
    leaves the snapshot with the failed disk only, as the engine moves a merged image to the next
    snapshot. Removing it again merges that disk alone: the merged disk's next layer stays the next
    snapshot's image, and a later snapshot gets a volume of its own (it used to get the same volume as
    the snapshot before it: a backup then found no volume made since its kept snapshot)."""
    import json

    from tests.ovirtsim.helpers import qemu_img

    disks = [add_disk(conn, name=f"halfmerged_{n}", size=16 * MiB, sd_name="data-nfs") for n in ("a", "b")]
    vms = conn.system_service().vms_service()
    vm = vms.add(types.Vm(name="halfmerged", cluster=types.Cluster(name="Production")))
    for disk in disks:
        vms.vm_service(vm.id).disk_attachments_service().add(
            types.DiskAttachment(disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO_SCSI, active=True)
        )
    snapshots = vms.vm_service(vm.id).snapshots_service()
    removed = snapshot(conn, vm.id, "removed")
    kept = snapshot(conn, vm.id, "kept")
    # Disk b's base needs a volume that is not there: its merge, which opens the whole chain, fails.
    (base,) = [
        p
        for p in (demo_sim.state_dir / "storage").glob(f"*/images/{disks[1].id}/*")
        if p.suffix not in (".meta", ".lease")
        and "backing-filename" not in json.loads(qemu_img("info", "--output=json", str(p)).stdout)
    ]
    qemu_img("rebase", "-u", "-f", "qcow2", "-b", "not-there", "-F", "qcow2", str(base))
    snapshots.snapshot_service(removed.id).remove()
    wait_for(lambda: snapshots.snapshot_service(removed.id).get().snapshot_status == types.SnapshotStatus.OK)
    assert set(disk_snapshot_ids(conn, removed.id)) == {disks[1].id}
    kept_images = disk_snapshot_ids(conn, kept.id)

    qemu_img("rebase", "-u", "-f", "qcow2", "-b", "", str(base))
    snapshots.snapshot_service(removed.id).remove()
    wait_for(lambda: removed.id not in {s.id for s in snapshots.list()}, what="the snapshot merged")
    assert disk_snapshot_ids(conn, kept.id)[disks[0].id] == kept_images[disks[0].id]
    later = disk_snapshot_ids(conn, snapshot(conn, vm.id, "later").id)
    assert later[disks[0].id] != kept_images[disks[0].id]
    vms.vm_service(vm.id).remove()
