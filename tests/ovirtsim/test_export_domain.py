"""The export storage domain and clones from snapshots, through ovirtsdk4 as the product calls them.

All on the session's demo engine (its `export1` domain): each test makes its own VMs and leaves
neither them nor their exported copies behind.
"""

import os
import uuid
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from ovirtsim import ovf, qemu, volume_meta
from tests.ovirtsim.helpers import MiB, download, identical, read_bytes, wait_for
from tests.ovirtsim.test_data_plane import snapshot


def system(conn):
    return conn.system_service()


def export_domain(conn) -> types.StorageDomain:
    (sd,) = system(conn).storage_domains_service().list(search="name=export1")
    return sd


def exported_vms(conn):
    sds = system(conn).storage_domains_service()
    return sds.storage_domain_service(export_domain(conn).id).vms_service()


def volume_file(sim, disk: types.Disk) -> Path:
    """The active volume of a disk of a file data domain, on the simulator's storage."""
    return sim.state_dir / "storage" / disk.storage_domains[0].id / "images" / disk.id / disk.image_id


def new_vm(conn, sim, name: str) -> types.Vm:
    """A stopped VM in Production with two disks on data-nfs holding recognizable data: a bootable
    thin QCOW2 disk and a thin RAW one."""
    vms = system(conn).vms_service()
    vm = vms.add(types.Vm(name=name, cluster=types.Cluster(name="Production"), memory=2**30))
    attachments = vms.vm_service(vm.id).disk_attachments_service()
    disks = system(conn).disks_service()
    for n, (fmt, size) in enumerate((("cow", 16 * MiB), ("raw", 8 * MiB))):
        disk = types.Disk(
            name=f"{name}_disk{n}",
            provisioned_size=size,
            format=types.DiskFormat(fmt),
            sparse=True,
            storage_domains=[types.StorageDomain(name="data-nfs")],
        )
        attachment = attachments.add(
            types.DiskAttachment(disk=disk, interface=types.DiskInterface.VIRTIO_SCSI, bootable=n == 0, active=True)
        )
        wait_for(lambda a=attachment: disks.disk_service(a.disk.id).get().status == types.DiskStatus.OK)
        sim.guest_write(attachment.disk.id, 0, bytes([0x30 + n]) * MiB)
    return vms.vm_service(vm.id).get()


def vm_disks(conn, vm_id: str) -> list[types.Disk]:
    service = system(conn).vms_service().vm_service(vm_id)
    return [a.disk for a in service.disk_attachments_service().list(follow="disk")]


def wait_unlocked(conn, vm_id: str) -> types.Vm:
    service = system(conn).vms_service().vm_service(vm_id)
    return wait_for(lambda: (vm := service.get()).status != types.VmStatus.IMAGE_LOCKED and vm, what="VM unlocked")


def job(conn, description: str) -> types.Job:
    return next(j for j in system(conn).jobs_service().list() if j.description == description)


def events(conn, vm_name: str) -> list[tuple[int, str]]:
    return [(e.code, e.description) for e in system(conn).events_service().list(search=f"vm.name={vm_name}")]


def remove_vm(conn, vm_id: str) -> None:
    try:
        system(conn).vms_service().vm_service(vm_id).remove()
    except sdk.NotFoundError:
        pass


def remove_exported(conn, vm_id: str) -> None:
    try:
        exported_vms(conn).vm_service(vm_id).remove()
    except sdk.NotFoundError:
        pass


@pytest.fixture
def stopped_vm(conn, demo_sim):
    vm = new_vm(conn, demo_sim, f"exp-{uuid.uuid4().hex[:6]}")
    yield vm
    remove_exported(conn, vm.id)
    remove_vm(conn, vm.id)


def test_it_exports_a_stopped_vm_in_the_export_domain_layout(conn, demo_sim, stopped_vm):
    vm = stopped_vm
    snapshot(conn, vm.id, "before-export")
    demo_sim.guest_write(vm.id, 4 * MiB, b"\x41" * MiB)  # on top of the snapshot
    sd = export_domain(conn)
    assert sd.storage_format == types.StorageFormat.V1
    vm_service = system(conn).vms_service().vm_service(vm.id)

    vm_service.export(storage_domain=types.StorageDomain(name="export1"), exclusive=False, discard_snapshots=True)
    assert vm_service.get().status == types.VmStatus.IMAGE_LOCKED  # the VM is locked while it is copied
    assert {d.status for d in vm_disks(conn, vm.id)} == {types.DiskStatus.LOCKED}
    with pytest.raises(sdk.Error, match=r"Cannot run VM because the VM is in Image Locked status\."):
        vm_service.start()
    assert wait_unlocked(conn, vm.id).status == types.VmStatus.DOWN
    assert job(conn, f"Exporting VM {vm.name} To Export Domain export1").status == types.JobStatus.FINISHED
    codes = events(conn, vm.name)
    assert (1162, f"Starting export Vm {vm.name} to export1") in codes
    assert (1150, f"Vm {vm.name} was exported successfully to export1") in codes

    # The share, as a node serving it sees it: SD_ID/{dom_md,images,master/vms}, all vdsm:kvm's.
    share = Path(demo_sim.info["export_domain_dirs"]["export1"])  # engine.json
    assert share == demo_sim.state_dir / "exports" / "Default"  # the staging share of data center Default
    root = share / sd.id
    metadata = dict(line.split("=", 1) for line in (root / "dom_md" / "metadata").read_text().splitlines())
    assert metadata["CLASS"] == "Backup" and metadata["SDUUID"] == sd.id and "_SHA_CKSUM" in metadata
    ovf_path = root / "master" / "vms" / vm.id / f"{vm.id}.ovf"
    exported = ovf.parse_ovf(ovf_path.read_text())
    assert (exported.id, exported.name, exported.cluster_name) == (vm.id, vm.name, "Production")
    assert [s.type for s in exported.snapshots] == ["ACTIVE"]  # the snapshots were discarded
    disks = {d.id: d for d in vm_disks(conn, vm.id)}
    assert {d.disk_id for d in exported.disks} == set(disks)
    for d in exported.disks:
        source = disks[d.disk_id]
        assert d.volume_id == source.image_id and not d.chain  # collapsed into a volume named by the leaf
        volume = root / "images" / d.disk_id / d.volume_id
        assert identical(volume, volume_file(demo_sim, source))  # the disk as of the export
        meta = volume_meta.parse(volume_meta.meta_path(volume).read_text())
        assert meta["PUUID"] == volume_meta.BLANK_UUID and meta["VOLTYPE"] == "LEAF"
        assert meta["DOMAIN"] == sd.id and meta["IMAGE"] == d.disk_id
        assert meta["FORMAT"] == ("COW" if d.alias.endswith("disk0") else "RAW")  # the base volume's format
    for path in [share, *share.rglob("*")]:  # as the hosts write them (the simulator runs as root)
        assert (path.stat().st_uid, path.stat().st_gid) == (
            (36, 36) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
        ), path
    boot = next(d for d in exported.disks if d.bootable)
    assert read_bytes(root / "images" / boot.disk_id / boot.volume_id, 4 * MiB, 4) == b"\x41" * 4

    # What the engine lists: the VM and its disks, read from the OVF.
    listed = exported_vms(conn).list()
    assert vm.id in {v.id for v in listed}
    assert exported_vms(conn).vm_service(vm.id).get().name == vm.name
    listed_disks = exported_vms(conn).vm_service(vm.id).disks_service().list()
    assert {d.id for d in listed_disks} == set(disks)
    assert vm.id not in {
        t.id for t in system(conn).storage_domains_service().storage_domain_service(sd.id).templates_service().list()
    }

    # Exported again: refused without exclusive, replaced with it (now with its snapshot, as a chain).
    with pytest.raises(sdk.Error, match=r"Cannot export VM\. VM with the same identifier already exists\.") as e:
        vm_service.export(storage_domain=types.StorageDomain(id=sd.id), exclusive=False, discard_snapshots=False)
    assert e.value.code == 409
    vm_service.export(storage_domain=types.StorageDomain(id=sd.id), exclusive=True, discard_snapshots=False)
    wait_unlocked(conn, vm.id)
    wait_for(lambda: job(conn, f"Exporting VM {vm.name} To Export Domain export1").status == types.JobStatus.FINISHED)
    exported = ovf.parse_ovf(ovf_path.read_text())
    assert [s.type for s in exported.snapshots] == ["REGULAR", "ACTIVE"]
    for d in exported.disks:
        assert len(d.chain) == 1 and d.chain[0].snapshot_id == exported.snapshots[0].id
        leaf = root / "images" / d.disk_id / d.volume_id
        meta = volume_meta.parse(volume_meta.meta_path(leaf).read_text())
        assert meta["PUUID"] == d.chain[0].volume_id and meta["VOLTYPE"] == "LEAF"
        assert identical(leaf, volume_file(demo_sim, disks[d.disk_id]))  # the chain reads as the disk

    # Removed from the export domain: its OVF and images go.
    exported_vms(conn).vm_service(vm.id).remove()
    assert vm.id not in {v.id for v in exported_vms(conn).list()}
    assert not ovf_path.parent.exists()
    assert not any((root / "images" / d).exists() for d in disks)
    assert (1160, f"Vm {vm.name} was removed from export1") in [
        (e.code, e.description) for e in system(conn).events_service().list(max=20)
    ]
    with pytest.raises(sdk.NotFoundError):
        exported_vms(conn).vm_service(vm.id).get()


def test_it_refuses_to_export_a_running_vm(conn):
    (web,) = system(conn).vms_service().list(search="name=web01")
    assert web.status == types.VmStatus.UP
    with pytest.raises(sdk.Error, match=r"\[Cannot export VM\. At least one of the VMs is not down\.\]") as e:
        system(conn).vms_service().vm_service(web.id).export(storage_domain=types.StorageDomain(name="export1"))
    assert e.value.code == 409
    (data,) = system(conn).storage_domains_service().list(search="name=data-nfs")
    with pytest.raises(sdk.Error, match=r"The specified domain 'data-nfs' is not an export domain\.") as e:
        system(conn).vms_service().vm_service(web.id).export(storage_domain=types.StorageDomain(id=data.id))
    assert e.value.code == 400


def test_it_imports_a_vm_back_from_the_export_domain(conn, demo_sim, stopped_vm):
    vm = stopped_vm
    snapshot(conn, vm.id, "kept")
    vm_service = system(conn).vms_service().vm_service(vm.id)
    vm_service.export(storage_domain=types.StorageDomain(name="export1"), discard_snapshots=False)
    wait_unlocked(conn, vm.id)
    sd = export_domain(conn)
    share = Path(demo_sim.info["export_domain_dirs"]["export1"]) / sd.id
    originals = {d.id: read_bytes(volume_file(demo_sim, d), 0, 2 * MiB) for d in vm_disks(conn, vm.id)}
    exported = exported_vms(conn).vm_service(vm.id)

    # The engine's rules: the VM still exists; a clone of a VM with snapshots must collapse them
    # (ovirtsdk4's collapse_snapshots= goes in the body, which the engine ignores: only the URL counts).
    target = types.StorageDomain(name="data-nfs")
    with pytest.raises(sdk.Error, match=r"Import VM failed - VM ID already exists in the system\."):
        exported.import_(storage_domain=target, cluster=types.Cluster(name="Production"))
    with pytest.raises(sdk.Error, match=rf"The VM {vm.name} has snapshots that must be collapsed\."):
        exported.import_(
            storage_domain=target,
            cluster=types.Cluster(name="Production"),
            clone=True,
            collapse_snapshots=True,
            vm=types.Vm(name=f"{vm.name}-copy"),
        )

    # A clone, collapsed: a new VM with new disks holding the exported content.
    exported.import_(
        storage_domain=target,
        cluster=types.Cluster(name="Production"),
        clone=True,
        vm=types.Vm(name=f"{vm.name}-copy"),
        query={"collapse_snapshots": "true"},
    )
    (copy,) = system(conn).vms_service().list(search=f"name={vm.name}-copy")
    try:
        assert copy.id != vm.id
        copy = wait_unlocked(conn, copy.id)
        assert copy.status == types.VmStatus.DOWN
        assert job(conn, f"Importing VM {copy.name} to Cluster Production").status == types.JobStatus.FINISHED
        codes = events(conn, copy.name)
        assert (1165, f"Starting to import Vm {copy.name} to Data Center Default, Cluster Production") in codes
        assert (1152, f"Vm {copy.name} was imported successfully to Data Center Default, Cluster Production") in codes
        copies = vm_disks(conn, copy.id)
        assert len(copies) == 2 and not set(originals) & {d.id for d in copies}
        exported_ovf = ovf.parse_ovf((share / "master" / "vms" / vm.id / f"{vm.id}.ovf").read_text())
        by_alias = {d.alias: d for d in exported_ovf.disks}
        for disk in copies:
            assert disk.status == types.DiskStatus.OK
            source = by_alias[disk.alias]
            assert identical(volume_file(demo_sim, disk), share / "images" / source.disk_id / source.volume_id)
            assert read_bytes(volume_file(demo_sim, disk), 0, 2 * MiB) == originals[source.disk_id]
        assert system(conn).vms_service().vm_service(copy.id).snapshots_service().list()[0].snapshot_type == (
            types.SnapshotType.ACTIVE
        )
    finally:
        remove_vm(conn, copy.id)

    # The VM itself, removed from the engine, then imported as it was: same ids, its snapshot kept.
    vm_service.remove()
    exported.import_(storage_domain=target, cluster=types.Cluster(name="Production"), async_=False)  # blocks
    back = vm_service.get()
    assert (back.name, back.status) == (vm.name, types.VmStatus.DOWN)
    assert {d.id for d in vm_disks(conn, vm.id)} == set(originals)
    for disk in vm_disks(conn, vm.id):
        assert read_bytes(volume_file(demo_sim, disk), 0, 2 * MiB) == originals[disk.id]
    snaps = system(conn).vms_service().vm_service(vm.id).snapshots_service().list()
    assert "kept" in {s.description for s in snaps}


def test_it_clones_a_vm_from_a_snapshot(conn, demo_sim, stopped_vm):
    vm = stopped_vm
    snap = snapshot(conn, vm.id, "for-clone")
    demo_sim.guest_write(vm.id, 0, b"\x77" * MiB)  # after the snapshot: not in the clone
    name = f"{vm.name}-clone"
    vms = system(conn).vms_service()
    clone = vms.add(
        types.Vm(name=name, cluster=types.Cluster(name="Production"), snapshots=[types.Snapshot(id=snap.id)])
    )
    try:
        assert clone.status == types.VmStatus.IMAGE_LOCKED
        snapshot_service = vms.vm_service(vm.id).snapshots_service().snapshot_service(snap.id)
        assert snapshot_service.get().snapshot_status == types.SnapshotStatus.LOCKED
        clone = wait_unlocked(conn, clone.id)
        assert clone.status == types.VmStatus.DOWN
        assert snapshot_service.get().snapshot_status == types.SnapshotStatus.OK
        assert job(conn, f"Creating VM {name} from Snapshot for-clone in Cluster Production").status == (
            types.JobStatus.FINISHED
        )
        codes = events(conn, name)
        assert (37, f"VM {name} creation was initiated by admin@internal-authz.") in codes
        assert (53, f"VM {name} creation has been completed.") in codes

        sources = {d.name: d for d in vm_disks(conn, vm.id)}
        copies = vm_disks(conn, clone.id)
        assert sorted(d.alias for d in copies) == sorted(f"{alias}_{name}" for alias in sources)
        for disk in copies:
            source = sources[disk.alias.removesuffix(f"_{name}")]
            n = int(source.name[-1])
            assert disk.id != source.id and disk.status == types.DiskStatus.OK
            # The snapshot's image, collapsed into one volume of its format (the RAW base stays RAW).
            assert disk.format == (types.DiskFormat.COW if n == 0 else types.DiskFormat.RAW)
            path = volume_file(demo_sim, disk)
            assert [p.name for p in path.parent.iterdir() if not p.name.endswith(".meta")] == [disk.image_id]
            assert "backing-filename" not in qemu.info(path)
            assert read_bytes(path, 0, 4) == bytes([0x30 + n]) * 4  # as it was at the snapshot
        demo_sim.guest_write(vm.id, MiB, b"\x78" * MiB)  # later writes to the source stay out of the clone
        boot = next(d for d in copies if d.alias.startswith(f"{vm.name}_disk0"))
        assert read_bytes(volume_file(demo_sim, boot), 0, 2 * MiB) == b"\x30" * MiB + b"\x00" * MiB
    finally:
        remove_vm(conn, clone.id)


def test_it_exports_imports_and_clones_disks_of_a_block_domain(conn, demo_sim, tmp_path):
    """The same on LVM (data-block): a preallocated RAW disk with a snapshot, read from its LVs."""
    name = f"blk-{uuid.uuid4().hex[:6]}"
    vms = system(conn).vms_service()
    vm = vms.add(types.Vm(name=name, cluster=types.Cluster(name="Production"), memory=2**30))
    try:
        attachment = (
            vms.vm_service(vm.id)
            .disk_attachments_service()
            .add(
                types.DiskAttachment(
                    disk=types.Disk(
                        name=f"{name}_data",
                        provisioned_size=8 * MiB,
                        format=types.DiskFormat.RAW,
                        sparse=False,
                        storage_domains=[types.StorageDomain(name="data-block")],
                    ),
                    interface=types.DiskInterface.VIRTIO_SCSI,
                    bootable=True,
                    active=True,
                )
            )
        )
        disk_service = system(conn).disks_service().disk_service(attachment.disk.id)
        wait_for(lambda: disk_service.get().status == types.DiskStatus.OK)
        demo_sim.guest_write(vm.id, 0, b"\x51" * MiB)
        snap = snapshot(conn, vm.id, "blk")
        demo_sim.guest_write(vm.id, MiB, b"\x52" * MiB)

        vms.vm_service(vm.id).export(storage_domain=types.StorageDomain(name="export1"), discard_snapshots=False)
        wait_unlocked(conn, vm.id)
        sd = export_domain(conn)
        image = Path(demo_sim.info["export_domain_dirs"]["export1"]) / sd.id / "images" / attachment.disk.id
        exported = exported_vms(conn).vm_service(vm.id).disks_service().list()
        leaf = image / exported[0].image_id
        # The LV's RAW base is longer than the disk (whole extents): the copy has the disk's size.
        assert qemu.info(image / qemu.info(leaf)["backing-filename"])["virtual-size"] == 8 * MiB
        assert read_bytes(leaf, 0, 2 * MiB) == b"\x51" * MiB + b"\x52" * MiB

        clone = vms.add(
            types.Vm(
                name=f"{name}-clone", cluster=types.Cluster(name="Production"), snapshots=[types.Snapshot(id=snap.id)]
            )
        )
        try:
            wait_unlocked(conn, clone.id)
            (copy,) = vm_disks(conn, clone.id)
            assert (copy.format, copy.sparse) == (types.DiskFormat.RAW, False)
            assert copy.storage_domains[0].id == disk_service.get().storage_domains[0].id  # the source's domain
            download(conn, demo_sim.ca_file, tmp_path / "clone.raw", disk_id=copy.id, out_fmt="raw")
            assert read_bytes(tmp_path / "clone.raw", 0, 2 * MiB) == b"\x51" * MiB + b"\x00" * MiB  # the snapshot's
        finally:
            remove_vm(conn, clone.id)

        exported_vms(conn).vm_service(vm.id).import_(
            storage_domain=types.StorageDomain(name="data-block"),
            cluster=types.Cluster(name="Production"),
            clone=True,
            vm=types.Vm(name=f"{name}-imported"),
            query={"collapse_snapshots": ""},
        )
        (imported,) = vms.list(search=f"name={name}-imported")
        try:
            assert wait_unlocked(conn, imported.id).status == types.VmStatus.DOWN
            (disk,) = vm_disks(conn, imported.id)
            assert disk.status == types.DiskStatus.OK and disk.format == types.DiskFormat.COW  # the leaf's format
            download(conn, demo_sim.ca_file, tmp_path / "imported.raw", disk_id=disk.id, out_fmt="raw")
            assert read_bytes(tmp_path / "imported.raw", 0, 2 * MiB) == b"\x51" * MiB + b"\x52" * MiB
        finally:
            remove_vm(conn, imported.id)
    finally:
        remove_exported(conn, vm.id)
        remove_vm(conn, vm.id)


def test_it_attaches_one_export_domain_per_data_center(conn, demo_sim):
    """A new NFS export domain cannot join the demo's data center while export1 is attached; it can
    once export1 is in maintenance and detached, as the engine rules. export1 is put back."""
    sds = system(conn).storage_domains_service()
    name = f"exp-{uuid.uuid4().hex[:6]}"

    def add(name: str, path: str, address: str = "nfs.example.internal") -> types.StorageDomain:
        return sds.add(
            types.StorageDomain(
                name=name,
                type=types.StorageDomainType.EXPORT,
                host=types.Host(name="host1"),
                storage=types.HostStorage(type=types.StorageType.NFS, address=address, path=path),
            )
        )

    new = add(name, f"/exports/{name}")
    assert new.status == types.StorageDomainStatus.UNATTACHED and new.storage_format == types.StorageFormat.V1
    root = demo_sim.state_dir / "exports" / name / new.id
    assert (root / "master" / "vms").is_dir()
    owner = (36, 36) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
    assert (root.parent.stat().st_uid, root.parent.stat().st_gid) == owner
    with pytest.raises(sdk.Error, match=r"Cannot add Storage\. The Storage Domain name is already in use\."):
        add(name, "/exports/other")
    export1 = export_domain(conn)
    # export1's share is served from this machine (a node's staging directory, by data center).
    assert (export1.storage.address, export1.storage.path) == (
        "127.0.0.1",
        str(demo_sim.state_dir / "exports" / "Default"),
    )
    with pytest.raises(sdk.Error, match=rf"Storage connection {export1.id} already exists for export1\."):
        add(f"{name}-2", export1.storage.path, export1.storage.address)
    with pytest.raises(sdk.Error, match=r"Problem while trying to mount target 127\.0\.0\.1:/nowhere/staging"):
        add(f"{name}-3", "/nowhere/staging", "127.0.0.1")

    (dc,) = system(conn).data_centers_service().list(search="name=Default")
    attached = system(conn).data_centers_service().data_center_service(dc.id).storage_domains_service()
    with pytest.raises(
        sdk.Error, match=r"Cannot attach more than one Import/Export Storage Domain to the same Data"
    ) as e:
        attached.add(types.StorageDomain(id=new.id))
    assert e.value.code == 409
    domain = attached.storage_domain_service(export1.id)
    with pytest.raises(sdk.Error, match=r"Cannot detach Storage\. The relevant Storage Domain's status is Active\."):
        domain.remove()
    metadata = Path(demo_sim.info["export_domain_dirs"]["export1"]) / export1.id / "dom_md" / "metadata"
    try:
        domain.deactivate()
        assert sds.storage_domain_service(export1.id).get().status == types.StorageDomainStatus.MAINTENANCE
        (web,) = system(conn).vms_service().list(search="name=web01")
        with pytest.raises(
            sdk.Error, match=r"Cannot export VM\. The relevant Storage Domain's status is Maintenance\."
        ):
            system(conn).vms_service().vm_service(web.id).export(storage_domain=types.StorageDomain(name="export1"))
        domain.remove()  # detached: the share keeps what it holds
        assert sds.storage_domain_service(export1.id).get().status == types.StorageDomainStatus.UNATTACHED
        assert "POOL_UUID=\n" in metadata.read_text()
        assert attached.add(types.StorageDomain(name=name)).status == types.StorageDomainStatus.ACTIVE
        assert f"POOL_UUID={dc.id}\n" in (root / "dom_md" / "metadata").read_text()
        codes = {e.code for e in system(conn).events_service().list(max=5)}
        assert {962, 966} <= codes
    finally:
        if sds.storage_domain_service(new.id).get().status == types.StorageDomainStatus.ACTIVE:
            attached.storage_domain_service(new.id).deactivate()
            attached.storage_domain_service(new.id).remove()
        status = sds.storage_domain_service(export1.id).get().status
        if status == types.StorageDomainStatus.UNATTACHED:
            attached.add(types.StorageDomain(id=export1.id))
        elif status == types.StorageDomainStatus.MAINTENANCE:
            domain.activate()
    assert sds.storage_domain_service(export1.id).get().status == types.StorageDomainStatus.ACTIVE
    assert f"POOL_UUID={dc.id}\n" in metadata.read_text()
