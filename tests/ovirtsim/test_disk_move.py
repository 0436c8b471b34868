"""Moving a disk to another storage domain (`POST /disks/{id}/move`): cold, live, refused, failed.

On one demo engine for the module (data-nfs, data-gluster and data-block in data center Default):
the moves leave VMs and disks behind that other modules' counts must not see. Each test moves disks
of its own, and puts the fault switches back.
"""

import subprocess
import uuid

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from tests.ovirtsim.helpers import MiB, add_disk, wait_for

SIZE = 16 * MiB


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from ovirtsim import Simulator

    with Simulator(tmp_path_factory.mktemp("move-engine"), seed="demo") as sim:
        yield sim


@pytest.fixture(scope="module")
def conn(engine):
    connection = engine.connect()
    yield connection
    connection.close()


@pytest.fixture
def sim(engine):
    yield engine
    engine.clear_faults()


def disk_service(conn, disk_id: str):
    return conn.system_service().disks_service().disk_service(disk_id)


def new_vm(conn, name: str, disk: types.Disk, *, up: bool) -> types.Vm:
    vms = conn.system_service().vms_service()
    vm = vms.add(
        types.Vm(
            name=f"{name}-{uuid.uuid4().hex[:6]}",
            cluster=types.Cluster(name="Production"),
            memory=2**30,
            os=types.OperatingSystem(type="rhel_9x64"),
        )
    )
    vms.vm_service(vm.id).disk_attachments_service().add(
        types.DiskAttachment(disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO_SCSI, active=True)
    )
    if up:
        vms.vm_service(vm.id).start()
        wait_for(lambda: vms.vm_service(vm.id).get().status == types.VmStatus.UP, what="VM up")
    return vms.vm_service(vm.id).get()


def take_snapshot(conn, vm_id: str, description: str) -> None:
    snapshots = conn.system_service().vms_service().vm_service(vm_id).snapshots_service()
    snap = snapshots.add(types.Snapshot(description=description, persist_memorystate=False))
    ok = types.SnapshotStatus.OK
    wait_for(lambda: snapshots.snapshot_service(snap.id).get().snapshot_status == ok, what="snapshot")


def volumes(sim, sd_name: str, disk_id: str) -> dict:
    """volume id -> path of the disk's volumes in a file domain (STATE/storage/SD_ID/images/DISK_ID)."""
    conn = sim.connect()
    try:
        (sd,) = conn.system_service().storage_domains_service().list(search=f"name={sd_name}")
    finally:
        conn.close()
    image_dir = sim.state_dir / "storage" / sd.id / "images" / disk_id
    return {p.name: p for p in image_dir.glob("*") if "." not in p.name}


def expected_image(tmp_path, writes: list[tuple[int, bytes]]):
    path = tmp_path / f"expected-{uuid.uuid4().hex[:6]}.raw"
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for offset, data in writes:
            f.seek(offset)
            f.write(data)
    return path


def compare(chain_top, expected) -> None:
    result = subprocess.run(
        ["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(chain_top), str(expected)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def move_and_wait(conn, disk_id: str, sd_name: str) -> types.Job:
    jobs_before = {j.id for j in conn.system_service().jobs_service().list()}
    disk_service(conn, disk_id).move(storage_domain=types.StorageDomain(name=sd_name))
    assert disk_service(conn, disk_id).get().status == types.DiskStatus.LOCKED
    job = wait_for(
        lambda: next((j for j in conn.system_service().jobs_service().list() if j.id not in jobs_before), None),
        what="the move's job",
    )
    jobs = conn.system_service().jobs_service()
    wait_for(lambda: jobs.job_service(job.id).get().status != types.JobStatus.STARTED, timeout=60, what="job end")
    return jobs.job_service(job.id).get()


def events_since(conn, since: int) -> list[types.Event]:
    return [e for e in conn.system_service().events_service().list(from_=since) if int(e.id) > since]


def last_event(conn) -> int:
    return max((int(e.id) for e in conn.system_service().events_service().list(max=1)), default=0)


def test_it_moves_a_disk_of_a_vm_that_is_down_with_its_chain(sim, conn, tmp_path):
    disk = add_disk(conn, name="cold-move", size=SIZE, sd_name="data-nfs")
    vm = new_vm(conn, "cold", disk, up=False)
    sim.guest_write(disk.id, 0, b"\x11" * MiB)
    take_snapshot(conn, vm.id, "before")
    sim.guest_write(disk.id, 4 * MiB, b"\x22" * MiB)
    old = volumes(sim, "data-nfs", disk.id)
    assert len(old) == 2
    since = last_event(conn)

    job = move_and_wait(conn, disk.id, "data-gluster")

    assert job.status == types.JobStatus.FINISHED
    assert job.description == "Moving Disk cold-move from data-nfs to data-gluster"
    steps = conn.system_service().jobs_service().job_service(job.id).steps_service().list()
    assert [s.description for s in steps] == ["Validating", "Executing", "Moving Image", "Finalizing"]
    assert all(s.status == types.StepStatus.FINISHED for s in steps)
    moved = disk_service(conn, disk.id).get()
    assert moved.status == types.DiskStatus.OK
    assert conn.follow_link(moved.storage_domains[0]).name == "data-gluster"
    assert volumes(sim, "data-nfs", disk.id) == {}
    new = volumes(sim, "data-gluster", disk.id)
    assert set(new) == set(old)  # the same volume ids
    top = next(p for p in new.values() if "VOLTYPE=LEAF" in p.with_name(p.name + ".meta").read_text())
    base = next(p for p in new.values() if p != top)
    # Each volume its own data, not flattened: the base holds what it held at the snapshot.
    compare(base, expected_image(tmp_path, [(0, b"\x11" * MiB)]))
    compare(top, expected_image(tmp_path, [(0, b"\x11" * MiB), (4 * MiB, b"\x22" * MiB)]))
    codes = [e.code for e in events_since(conn, since)]
    assert 2008 in codes and 2010 in codes


def test_it_migrates_a_running_vms_disk_live_with_guest_writes_during_the_mirror(sim, conn, tmp_path):
    disk = add_disk(conn, name="live-move", size=SIZE, sd_name="data-nfs")
    vm = new_vm(conn, "live", disk, up=True)
    sim.guest_write(vm.id, 0, b"\x31" * MiB)
    take_snapshot(conn, vm.id, "older")
    sim.guest_write(vm.id, 2 * MiB, b"\x32" * MiB)
    old = volumes(sim, "data-nfs", disk.id)
    # The mirror and the older volumes' copy go at 2 MiB/s (the job's speed, qemu-img convert -r): the
    # 2 MiB of the older volumes take a second, the mirror of the guest's writes meanwhile 1.5 s more.
    # The pivot is held until the test has seen the move mid-way: whatever the machine's load, the
    # mirror may catch up with the writes below before the checks, but never end the move under them.
    sim.set_faults(move_speed=2 * MiB, hold_move_pivot=True)
    since = last_event(conn)
    jobs_before = {j.id for j in conn.system_service().jobs_service().list()}

    disk_service(conn, disk.id).move(storage_domain=types.StorageDomain(name="data-gluster"))
    jobs = conn.system_service().jobs_service()
    job = wait_for(
        lambda: next(
            (j for j in jobs.list() if j.id not in jobs_before and j.description.startswith("Migrating")), None
        ),
        what="the migration's job",
    )
    assert job.description == f"Migrating Disk live-move from data-nfs to data-gluster of VM {vm.name}"
    steps = jobs.job_service(job.id).steps_service()
    wait_for(lambda: any(s.description == "Synchronizing image data" for s in steps.list()), what="the mirror")
    sim.guest_write(vm.id, 6 * MiB, b"\x33" * 2 * MiB)  # into the mirrored active volume
    sim.guest_write(vm.id, 10 * MiB, b"\x34" * MiB)
    # Mid-way: the mirror still copies them (its step goes on), the disk is still locked.
    (sync,) = [s for s in steps.list() if s.description == "Synchronizing image data"]
    assert sync.status == types.StepStatus.STARTED
    assert sync.type == types.StepEnum.UNKNOWN and sync.parent_step is not None
    with pytest.raises(sdk.Error, match="is being moved or copied"):
        disk_service(conn, disk.id).move(storage_domain=types.StorageDomain(name="data-nfs"))
    sim.set_faults(hold_move_pivot=False)
    wait_for(lambda: jobs.job_service(job.id).get().status != types.JobStatus.STARTED, timeout=60, what="job end")

    assert jobs.job_service(job.id).get().status == types.JobStatus.FINISHED
    moved = disk_service(conn, disk.id).get()
    assert moved.status == types.DiskStatus.OK
    assert conn.follow_link(moved.storage_domains[0]).name == "data-gluster"
    assert volumes(sim, "data-nfs", disk.id) == {}
    new = volumes(sim, "data-gluster", disk.id)
    assert set(new) == set(old)  # the auto-generated snapshot was merged away again
    snapshots = conn.system_service().vms_service().vm_service(vm.id).snapshots_service().list()
    assert not any("Auto-generated for Live Storage Migration" in s.description for s in snapshots)
    expected = expected_image(
        tmp_path,
        [(0, b"\x31" * MiB), (2 * MiB, b"\x32" * MiB), (6 * MiB, b"\x33" * 2 * MiB), (10 * MiB, b"\x34" * MiB)],
    )
    sim.guest_write(vm.id, 12 * MiB, b"\x35" * MiB)  # the guest writes on the target now
    # Its qemu merges on the target: the older snapshot removed live, one volume left.
    (older,) = [s for s in snapshots if s.description == "older"]
    vm_service = conn.system_service().vms_service().vm_service(vm.id)
    vm_service.snapshots_service().snapshot_service(older.id).remove()
    wait_for(lambda: len(vm_service.snapshots_service().list()) == 1, what="the older snapshot merged")
    vm_service.stop()
    wait_for(lambda: vm_service.get().status == types.VmStatus.DOWN, what="VM down")
    (top,) = volumes(sim, "data-gluster", disk.id).values()
    with open(expected, "r+b") as f:
        f.seek(12 * MiB)
        f.write(b"\x35" * MiB)
    compare(top, expected)
    events = events_since(conn, since)
    codes = [e.code for e in events]
    assert 2008 in codes and 2010 in codes
    assert any(e.code == 68 and "live-move Auto-generated for Live Storage Migration" in e.description for e in events)


def test_it_rolls_back_a_live_migration_whose_mirror_fails(sim, conn, tmp_path):
    disk = add_disk(conn, name="failing-mirror", size=SIZE, sd_name="data-nfs")
    vm = new_vm(conn, "failing-mirror", disk, up=True)
    sim.guest_write(vm.id, 0, b"\x61" * MiB)
    old = volumes(sim, "data-nfs", disk.id)
    sim.set_faults(move_mirror_enospc=True, move_speed=2 * MiB)  # the older volume's copy takes 0.5 s
    since = last_event(conn)
    jobs_before = {j.id for j in conn.system_service().jobs_service().list()}

    disk_service(conn, disk.id).move(storage_domain=types.StorageDomain(name="data-gluster"))
    jobs = conn.system_service().jobs_service()
    job = wait_for(
        lambda: next((j for j in jobs.list() if j.id not in jobs_before and "Migrating" in j.description), None),
        what="the migration's job",
    )
    steps = jobs.job_service(job.id).steps_service()
    wait_for(lambda: any(s.description == "Synchronizing image data" for s in steps.list()), what="the mirror")
    sim.guest_write(vm.id, 4 * MiB, b"\x62" * MiB)  # the mirror's copy of it fails: the guest's write does not
    wait_for(lambda: jobs.job_service(job.id).get().status != types.JobStatus.STARTED, timeout=60, what="job end")

    assert jobs.job_service(job.id).get().status == types.JobStatus.FAILED
    back = disk_service(conn, disk.id).get()
    assert back.status == types.DiskStatus.OK
    assert conn.follow_link(back.storage_domains[0]).name == "data-nfs"
    assert volumes(sim, "data-gluster", disk.id) == {}
    assert set(volumes(sim, "data-nfs", disk.id)) == set(old)  # the auto-generated snapshot merged away
    events = events_since(conn, since)
    assert any(e.code == 10802 and "VmReplicateDiskStartVDS" in e.description for e in events)
    assert any(e.code == 2011 for e in events)
    sim.set_faults(move_mirror_enospc=False, move_speed=0)
    # The guest stays on its source volumes, with every byte it wrote.
    vm_service = conn.system_service().vms_service().vm_service(vm.id)
    vm_service.stop()
    wait_for(lambda: vm_service.get().status == types.VmStatus.DOWN, what="VM down")
    (top,) = volumes(sim, "data-nfs", disk.id).values()
    compare(top, expected_image(tmp_path, [(0, b"\x61" * MiB), (4 * MiB, b"\x62" * MiB)]))


def test_it_rolls_back_a_live_migration_whose_copy_fails(sim, conn):
    disk = add_disk(conn, name="failing-move", size=SIZE, sd_name="data-nfs")
    vm = new_vm(conn, "failing", disk, up=True)
    sim.guest_write(vm.id, 0, b"\x41" * MiB)
    old = volumes(sim, "data-nfs", disk.id)
    sim.set_faults(move_target_enospc=True)  # every write to the target fails: ENOSPC
    since = last_event(conn)

    job = move_and_wait(conn, disk.id, "data-gluster")

    assert job.status == types.JobStatus.FAILED
    back = disk_service(conn, disk.id).get()
    assert back.status == types.DiskStatus.OK
    assert conn.follow_link(back.storage_domains[0]).name == "data-nfs"
    assert volumes(sim, "data-gluster", disk.id) == {}
    assert set(volumes(sim, "data-nfs", disk.id)) == set(old)
    events = events_since(conn, since)
    assert any(e.code == 2011 for e in events)
    assert any(e.code == 10802 and "No space left on device" in e.description for e in events)
    sim.set_faults(move_target_enospc=False)
    sim.guest_write(vm.id, MiB, b"\x42" * MiB)  # the guest goes on, on its source
    snapshots = conn.system_service().vms_service().vm_service(vm.id).snapshots_service().list()
    assert not any("Auto-generated" in s.description for s in snapshots)


def test_it_rolls_back_a_cold_move_that_fails(sim, conn):
    disk = add_disk(conn, name="failing-cold", size=SIZE, sd_name="data-nfs")
    sim.guest_write(disk.id, 0, b"\x51" * MiB)
    sim.set_faults(move_target_enospc=True)
    job = move_and_wait(conn, disk.id, "data-gluster")
    assert job.status == types.JobStatus.FAILED
    back = disk_service(conn, disk.id).get()
    assert back.status == types.DiskStatus.OK
    assert conn.follow_link(back.storage_domains[0]).name == "data-nfs"
    assert volumes(sim, "data-gluster", disk.id) == {}
    assert len(volumes(sim, "data-nfs", disk.id)) == 1


def refused(conn, disk_id: str, sd: types.StorageDomain) -> str:
    with pytest.raises(sdk.Error) as raised:
        disk_service(conn, disk_id).move(storage_domain=sd)
    return str(raised.value)


def test_it_refuses_moves_the_engine_refuses(sim, conn):
    disk = add_disk(conn, name="refused-move", size=SIZE, sd_name="data-nfs")
    assert "The source and target storage domains are the same." in refused(
        conn, disk.id, types.StorageDomain(name="data-nfs")
    )
    assert "Storage Domain type is illegal." in refused(conn, disk.id, types.StorageDomain(name="export1"))
    (dc,) = conn.system_service().data_centers_service().list(search="name=Default")
    (export,) = conn.system_service().storage_domains_service().list(search="name=export1")
    attached = conn.system_service().data_centers_service().data_center_service(dc.id).storage_domains_service()
    attached.storage_domain_service(export.id).deactivate()
    try:
        assert "The relevant Storage Domain's status is Maintenance." in refused(
            conn, disk.id, types.StorageDomain(name="export1")
        )
    finally:
        attached.storage_domain_service(export.id).activate()
    assert "Storage Domain doesn't exist." in refused(conn, disk.id, types.StorageDomain(id=str(uuid.uuid4())))
    sim.set_faults(move_target_full=True)
    assert "Low disk space on Storage Domain data-gluster." in refused(
        conn, disk.id, types.StorageDomain(name="data-gluster")
    )
    sim.set_faults(move_target_full=False)
    raw = add_disk(conn, name="raw-thin-move", size=SIZE, fmt="raw", sd_name="data-nfs")
    assert "Disk configuration (RAW Sparse backup-None) is incompatible with the storage domain type." in refused(
        conn, raw.id, types.StorageDomain(name="data-block")
    )
    shared = (
        conn.system_service()
        .disks_service()
        .add(
            types.Disk(
                name="shared-move",
                provisioned_size=SIZE,
                format=types.DiskFormat.RAW,
                sparse=False,
                shareable=True,
                storage_domains=[types.StorageDomain(name="data-nfs")],
            )
        )
    )
    wait_for(lambda: disk_service(conn, shared.id).get().status == types.DiskStatus.OK, what="shared disk")
    assert "is shareable, which Gluster domains do not support." in refused(
        conn, shared.id, types.StorageDomain(name="data-gluster")
    )


def test_it_refuses_a_move_to_a_user_whose_role_lacks_the_permit(sim, conn):
    disk = add_disk(conn, name="not-mine-to-move", size=SIZE, sd_name="data-nfs")
    sim.add_user("diskmover", "pw", ["edit_disk_properties"])
    mover = sim.connect(username="diskmover@internal", password="pw")
    try:
        with pytest.raises(sdk.AuthError, match="Cannot move Virtual Disk. User is not authorized"):
            disk_service(mover, disk.id).move(storage_domain=types.StorageDomain(name="data-gluster"))
    finally:
        mover.close()
    sim.add_user("diskmover", "pw", ["configure_disk_storage"])
    mover = sim.connect(username="diskmover@internal", password="pw")
    try:
        disk_service(mover, disk.id).move(storage_domain=types.StorageDomain(name="data-gluster"))
    finally:
        mover.close()
    wait_for(lambda: disk_service(conn, disk.id).get().status == types.DiskStatus.OK, what="moved")


def block_lvs(sim, conn, disk_id: str) -> list[dict]:
    (sd,) = conn.system_service().storage_domains_service().list(search="name=data-block")
    return [lv for lv in sim.lvm().lvs(sd.id) if f"IU_{disk_id}" in lv["tags"]]


def test_it_moves_a_disk_to_a_block_domain_cold_and_back_live(sim, conn, tmp_path):
    disk = add_disk(conn, name="block-move", size=SIZE, sd_name="data-nfs")
    vm = new_vm(conn, "block", disk, up=False)
    sim.guest_write(disk.id, 0, b"\x71" * MiB)
    take_snapshot(conn, vm.id, "on nfs")
    sim.guest_write(disk.id, 3 * MiB, b"\x72" * MiB)
    ids = set(volumes(sim, "data-nfs", disk.id))

    assert move_and_wait(conn, disk.id, "data-block").status == types.JobStatus.FINISHED
    lvs = block_lvs(sim, conn, disk.id)
    assert {lv["name"] for lv in lvs} == ids  # an LV per volume, same ids, tagged as vdsm tags them
    assert volumes(sim, "data-nfs", disk.id) == {}

    vms = conn.system_service().vms_service()
    vms.vm_service(vm.id).start()
    wait_for(lambda: vms.vm_service(vm.id).get().status == types.VmStatus.UP, what="VM up")
    sim.guest_write(vm.id, 5 * MiB, b"\x73" * MiB)
    assert move_and_wait(conn, disk.id, "data-nfs").status == types.JobStatus.FINISHED
    sim.guest_write(vm.id, 7 * MiB, b"\x74" * MiB)
    vms.vm_service(vm.id).stop()
    wait_for(lambda: vms.vm_service(vm.id).get().status == types.VmStatus.DOWN, what="VM down")

    assert block_lvs(sim, conn, disk.id) == []
    back = volumes(sim, "data-nfs", disk.id)
    assert set(back) == ids
    top = next(p for p in back.values() if "VOLTYPE=LEAF" in p.with_name(p.name + ".meta").read_text())
    writes = [(0, b"\x71" * MiB), (3 * MiB, b"\x72" * MiB), (5 * MiB, b"\x73" * MiB), (7 * MiB, b"\x74" * MiB)]
    compare(top, expected_image(tmp_path, writes))
