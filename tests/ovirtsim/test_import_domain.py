"""Importing an NFS data domain laid out on a share served by the product's NFS exporter (Ganesha),
registering its VM and running it from the share's files, through ovirtsdk4 as the product calls it."""

import base64
import hashlib
import os
import ssl
import subprocess
import urllib.request
import uuid
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from ovirtsim import Simulator, data_domain, ovf, qemu, volume_meta
from tests.conftest import ganesha_exporter
from tests.ovirtsim.helpers import MiB, read_bytes, wait_for

ZERO = volume_meta.BLANK_UUID


def qemu_write(path: Path, fmt: str, offset: int, byte: int, length: int = MiB) -> None:
    subprocess.run(
        ["qemu-io", "-f", fmt, "-c", f"write -P {byte} {offset} {length}", str(path)], check=True, capture_output=True
    )


def lay_out_domain(share: Path, remote_path: str, *, copy: bool = False) -> dict:
    """A data domain on `share` as vdsm lays it out, with one VM of two disks: a QCOW2 chain of two
    volumes (base: 0x11 at 0; top: 0x22 at 1 MiB) and a RAW one (0x33 at 0), and its OVF_STORE.
    With `copy`, the OVF_STORE has a second VM, db-copy, whose OVF names the same RAW disk."""
    sd_id, vm_id, snap_id = (str(uuid.uuid4()) for _ in range(3))
    root = data_domain.write_domain(share, sd_id=sd_id, description="restored", remote_path=remote_path)
    chain_disk, raw_disk = str(uuid.uuid4()), str(uuid.uuid4())
    base, top, raw = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    size = 16 * MiB
    images = root / "images"
    qemu.create(images / chain_disk / base, fmt="qcow2", size=size)
    qemu_write(images / chain_disk / base, "qcow2", 0, 0x11)
    qemu.create(images / chain_disk / top, fmt="qcow2", size=size, backing=images / chain_disk / base)
    qemu_write(images / chain_disk / top, "qcow2", MiB, 0x22)
    qemu.create(images / raw_disk / raw, fmt="raw", size=8 * MiB)
    qemu_write(images / raw_disk / raw, "raw", 0, 0x33)
    for disk_id, volumes, alias, capacity in (
        (chain_disk, [{"id": base, "format": "cow"}, {"id": top, "format": "cow"}], "db_os", size),
        (raw_disk, [{"id": raw, "format": "raw"}], "db_data", 8 * MiB),
    ):
        volume_meta.write_image_meta(
            images / disk_id, domain_id=sd_id, image_id=disk_id, capacity=capacity, volumes=volumes, alias=alias
        )
        for v in volumes:
            (images / disk_id / f"{v['id']}.lease").touch()
    vm = ovf.OvfVm(
        id=vm_id,
        name="db-restored",
        cluster_name="Default",
        disks=[
            ovf.OvfDisk(
                disk_id=chain_disk,
                volume_id=top,
                alias="db_os",
                provisioned_size=size,
                bootable=True,
                storage_domain_id=sd_id,
                chain=[ovf.OvfVolume(base, "cow", True, snap_id)],
            ),
            ovf.OvfDisk(disk_id=raw_disk, volume_id=raw, alias="db_data", provisioned_size=8 * MiB, format="raw"),
        ],
        nics=[{"id": str(uuid.uuid4()), "name": "nic1", "mac": "56:6f:00:00:00:01"}],
        snapshots=[ovf.OvfSnapshot(snap_id, "REGULAR", "nightly"), ovf.OvfSnapshot(str(uuid.uuid4()), "ACTIVE")],
    )
    ovfs = {vm_id: ovf.build_ovf(vm)}
    copy_id = str(uuid.uuid4())
    if copy:
        ovfs[copy_id] = ovf.build_ovf(ovf.OvfVm(id=copy_id, name="db-copy", cluster_name="Default", disks=vm.disks[1:]))
    data_domain.write_ovf_store(root, image_id=str(uuid.uuid4()), volume_id=str(uuid.uuid4()), ovfs=ovfs)
    for path in (root, *root.rglob("*")):
        os.chown(path, 36, 36)  # vdsm's: the hosts' qemu reads and writes them over NFS as 36:36
    return {
        "sd_id": sd_id,
        "vm_id": vm_id,
        "copy_id": copy_id,
        "root": root,
        "chain": (chain_disk, base, top),
        "raw": (raw_disk, raw),
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def engine(storage_sim):
    """The module's empty engine: its hosts do NFS in its storage network, where the node serves."""
    return storage_sim


@pytest.fixture
def share(tmp_path, netns_exporter):
    """A directory of this machine served over NFS at its own path, as the product serves a restore:
    by the node's Ganesha in the engine's hosts' storage network (NFS_NETNS)."""
    directory = tmp_path / "share"
    directory.mkdir()
    export = netns_exporter.export(directory=directory, pseudo=str(directory), clients=["127.0.0.1"])
    yield directory, export
    netns_exporter.unexport(export)


def add(conn, export, name: str | None = "restored-sd", path: str | None = None) -> types.StorageDomain:
    return (
        conn.system_service()
        .storage_domains_service()
        .add(
            types.StorageDomain(
                name=name,
                type=types.StorageDomainType.DATA,
                import_=True,
                host=types.Host(name="host1"),
                storage=types.HostStorage(
                    type=types.StorageType.NFS,
                    address="127.0.0.1",
                    path=path or export.pseudo,
                    mount_options=f"port={export.port}",
                ),
            )
        )
    )


def test_it_imports_a_data_domain_registers_its_vm_and_runs_it_from_the_share(engine, share):
    directory, export = share
    laid = lay_out_domain(directory, f"127.0.0.1:{export.pseudo}")
    chain_disk, base, top = laid["chain"]
    raw_disk, raw = laid["raw"]
    images = laid["root"] / "images"
    conn = engine.connect()
    system = conn.system_service()
    sds = system.storage_domains_service()
    (dc,) = system.data_centers_service().list()
    attached = system.data_centers_service().data_center_service(dc.id).storage_domains_service()
    try:
        sd = add(conn, export)
        assert (sd.id, sd.name, sd.status) == (laid["sd_id"], "restored-sd", types.StorageDomainStatus.UNATTACHED)
        assert sd.storage_format == types.StorageFormat.V5
        with pytest.raises(sdk.Error, match=rf"Storage connection {sd.id} already exists for restored-sd\."):
            add(conn, export, name="again")
        domain = sds.storage_domain_service(sd.id)
        with pytest.raises(sdk.Error, match=r"The relevant Storage Domain's status is Unattached\."):
            domain.vms_service().vm_service(laid["vm_id"]).register(cluster=types.Cluster(name="Default"))

        attached.add(types.StorageDomain(id=sd.id))
        assert domain.get().status == types.StorageDomainStatus.ACTIVE
        metadata = data_domain.read_metadata(laid["root"] / "dom_md" / "metadata")  # the seal checks too
        assert metadata["POOL_UUID"] == dc.id

        (listed,) = domain.vms_service().list(unregistered=True)
        assert (listed.id, listed.name) == (laid["vm_id"], "db-restored")
        disks = {d.id: d for d in domain.disks_service().list(unregistered=True)}
        assert set(disks) == {chain_disk, raw_disk}  # the OVF_STORE is not one of them
        assert (disks[chain_disk].image_id, disks[chain_disk].alias) == (top, "db_os")

        vm_ref = domain.vms_service().vm_service(laid["vm_id"])
        with pytest.raises(sdk.Error, match=r"Not Found|not found"):
            system.storage_domains_service().storage_domain_service(sd.id).vms_service().vm_service(
                str(uuid.uuid4())
            ).register(cluster=types.Cluster(name="Default"))
        system.vms_service().add(types.Vm(name="taken", cluster=types.Cluster(name="Default")))
        with pytest.raises(sdk.Error, match=r"Import VM failed - VM Name already exists"):
            vm_ref.register(cluster=types.Cluster(name="Default"), vm=types.Vm(name="taken"))
        before = {p: sha256(p) for p in (images / chain_disk / base, images / raw_disk / raw)}
        vm_ref.register(cluster=types.Cluster(name="Default"), vm=types.Vm(name="db-restored"), reassign_bad_macs=True)
        (vm,) = system.vms_service().list(search="name=db-restored")
        assert vm.id == laid["vm_id"] and vm.status == types.VmStatus.DOWN
        assert domain.vms_service().list(unregistered=True) == []
        assert domain.disks_service().list(unregistered=True) == []
        vm_service = system.vms_service().vm_service(vm.id)
        vm_disks = {a.disk.id: a.disk for a in vm_service.disk_attachments_service().list(follow="disk")}
        assert set(vm_disks) == {chain_disk, raw_disk}
        assert vm_disks[chain_disk].image_id == top and vm_disks[raw_disk].format == types.DiskFormat.RAW
        assert {s.description for s in vm_service.snapshots_service().list()} == {"nightly", "Active VM"}
        codes = {e.code for e in system.events_service().list(max=10)}
        assert {956, 962, 966, 174} <= codes

        vm_service.start()
        wait_for(lambda: vm_service.get().status == types.VmStatus.UP, what="VM up")
        # Its qemu reads the share over NFS (qemu's nfs driver, in the hosts' storage network).
        held = engine._service.engine.vm_qemus[vm.id]._qmp.execute("query-named-block-nodes", flat=True)
        assert {n["file"].split("?")[0] for n in held if n["drv"] == "nfs"} == {
            f"nfs://127.0.0.1{export.pseudo}/{laid['sd_id']}/images/{p}"
            for p in (f"{chain_disk}/{base}", f"{chain_disk}/{top}", f"{raw_disk}/{raw}")
        }
        engine.guest_write(chain_disk, 2 * MiB, b"\x44" * MiB)  # through the VM's qemu
        engine.guest_write(raw_disk, MiB, b"\x55" * 4096)
        with pytest.raises(sdk.Error, match=r"VMs in a state other than \"Down\" or \"Suspended\""):
            attached.storage_domain_service(sd.id).deactivate()
        vm_service.stop()
        wait_for(lambda: vm_service.get().status == types.VmStatus.DOWN, what="VM down")
        # The guest saw the share's data, and wrote into the top volume only.
        top_path = images / chain_disk / top
        assert read_bytes(top_path, 0, 4) == b"\x11" * 4  # from the base, through the chain
        assert read_bytes(top_path, MiB, 4) == b"\x22" * 4
        assert read_bytes(top_path, 2 * MiB, 4) == b"\x44" * 4
        assert sha256(images / chain_disk / base) == before[images / chain_disk / base]
        assert read_bytes(images / raw_disk / raw, MiB, 4) == b"\x55" * 4  # a RAW leaf is its own top

        # Out again: maintenance, detach (the engine forgets the VM and disks), remove format=false.
        attached.storage_domain_service(sd.id).deactivate()
        attached.storage_domain_service(sd.id).remove()
        assert system.vms_service().list(search="name=db-restored") == []
        assert data_domain.read_metadata(laid["root"] / "dom_md" / "metadata")["POOL_UUID"] == ""
        with pytest.raises(sdk.Error, match=r"not simulated"):
            domain.remove(host="host1", format=True)
        domain.remove(host="host1", format=False)
        assert [s.id for s in sds.list()].count(sd.id) == 0
        assert top_path.is_file() and (images / raw_disk / raw).is_file()  # the share keeps its files
    finally:
        for s in sds.list():
            if s.id == laid["sd_id"]:
                if s.status == types.StorageDomainStatus.ACTIVE:
                    attached.storage_domain_service(s.id).deactivate()
                if s.status != types.StorageDomainStatus.UNATTACHED:
                    attached.storage_domain_service(s.id).remove()
                sds.storage_domain_service(s.id).remove(host="host1")
        for v in system.vms_service().list(search="name=taken"):
            system.vms_service().vm_service(v.id).remove()
        conn.close()


def test_it_refuses_shares_holding_no_data_domain(engine, share):
    directory, export = share
    conn = engine.connect()
    try:
        with pytest.raises(sdk.Error, match=r"holds no data domain to import \(found: nothing\)") as e:
            add(conn, export)
        assert e.value.code == 501
        root = data_domain.write_domain(directory, sd_id=str(uuid.uuid4()), description="x", remote_path="a:/b")
        metadata = root / "dom_md" / "metadata"
        fields = data_domain.read_metadata(metadata)
        data_domain.write_metadata(metadata, {**fields, "CLASS": "Backup"})
        with pytest.raises(sdk.Error, match=r"CLASS=Backup"):
            add(conn, export)
        metadata.write_text(metadata.read_text().replace("CLASS=Backup", "CLASS=Data"))  # the seal broken
        with pytest.raises(sdk.Error, match=r"Meta Data seal is broken"):
            add(conn, export)
        with pytest.raises(sdk.Error, match=r"Problem while trying to mount target 127\.0\.0\.1:/nowhere"):
            add(conn, export, path="/nowhere")
    finally:
        conn.close()


def api_get(engine, path: str) -> str:
    """A GET of the API as any HTTP client sends it (basic auth), for what ovirtsdk4 cannot send."""
    request = urllib.request.Request(engine.info["api_url"] + path, headers={"Accept": "application/xml"})
    token = base64.b64encode(f"admin@internal:{engine.info['password']}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=engine.info["ca_file"])
    with urllib.request.urlopen(request, context=context) as response:
        return response.read().decode()


def test_it_registers_partially_refuses_what_the_engine_refuses_and_removes_vms_from_the_share(engine, share):
    directory, export = share
    laid = lay_out_domain(directory, f"127.0.0.1:{export.pseudo}", copy=True)
    chain_disk, _, _ = laid["chain"]
    raw_disk, _ = laid["raw"]
    images = laid["root"] / "images"
    conn = engine.connect()
    system = conn.system_service()
    sds = system.storage_domains_service()
    (dc,) = system.data_centers_service().list()
    attached = system.data_centers_service().data_center_service(dc.id).storage_domains_service()
    try:
        sd = add(conn, export, name=None)  # no name: the domain's own (its metadata's DESCRIPTION)
        assert sd.name == "restored"
        attached.add(types.StorageDomain(name="restored"))
        domain = sds.storage_domain_service(sd.id)
        # The matrix parameter the engine also reads (`;unregistered`), as other clients send it.
        listed = api_get(engine, f"/storagedomains/{sd.id}/vms;unregistered")
        assert laid["vm_id"] in listed and laid["copy_id"] in listed
        assert api_get(engine, f"/storagedomains/{sd.id}/vms").count("<vm ") == 0
        vms = domain.vms_service()
        with pytest.raises(sdk.NotFoundError):
            vms.vm_service(laid["vm_id"]).register(cluster=types.Cluster(name="nowhere"))
        vms.vm_service(laid["vm_id"]).register(cluster=types.Cluster(name="Default"))
        copy = vms.vm_service(laid["copy_id"])
        with pytest.raises(sdk.Error, match=r"The following disks already exist: db_data\. Please import as a clone\."):
            copy.register(cluster=types.Cluster(name="Default"))
        copy.register(cluster=types.Cluster(name="Default"), allow_partial_import=True)
        (registered,) = system.vms_service().list(search="name=db-copy")
        assert system.vms_service().vm_service(registered.id).disk_attachments_service().list() == []
        assert (
            175,
            "VM db-copy has been imported from the given configuration but the following disk(s) failed to "
            "attach: db_data.",
        ) in [(e.code, e.description) for e in system.events_service().list(max=5)]
        system.vms_service().vm_service(registered.id).remove()

        vm_service = system.vms_service().vm_service(laid["vm_id"])
        with pytest.raises(sdk.Error, match=r"Cannot remove VM with detaching disks, snapshots exist\."):
            vm_service.remove(detach_only=True)  # the chain disk has a snapshot
        vm_service.remove()  # its volumes go from the share, as vdsm deletes them
        assert not (images / chain_disk).exists() and not (images / raw_disk).exists()
        assert domain.disks_service().list(unregistered=True) == []
        assert [i.ovf_store for i in data_domain.images(laid["root"])] == [True]  # the OVF_STORE stays
    finally:
        for s in sds.list():
            if s.id == laid["sd_id"]:
                if s.status == types.StorageDomainStatus.ACTIVE:
                    attached.storage_domain_service(s.id).deactivate()
                if s.status != types.StorageDomainStatus.UNATTACHED:
                    attached.storage_domain_service(s.id).remove()
                sds.storage_domain_service(s.id).remove(host="host1")
        conn.close()


def test_it_runs_a_registered_vm_from_the_share_again_after_an_engine_crash(tmp_path):
    """Killed, the engine keeps its hosts' storage network: the node's Ganesha serving there goes on,
    and the VM's qemu started again reads the share's chain over NFS."""
    directory = tmp_path / "share"
    directory.mkdir()
    with Simulator(tmp_path / "engine", seed="empty") as sim:
        exporter = ganesha_exporter(tmp_path / "ganesha", netns=sim.storage_netns)
        export = exporter.export(directory=directory, pseudo=str(directory), clients=["127.0.0.1"])
        laid = lay_out_domain(directory, f"127.0.0.1:{export.pseudo}")
        chain_disk, base, top = laid["chain"]
        images = laid["root"] / "images"
        with sim.connect() as conn:
            system = conn.system_service()
            (dc,) = system.data_centers_service().list()
            sd = add(conn, export)
            system.data_centers_service().data_center_service(dc.id).storage_domains_service().add(
                types.StorageDomain(id=sd.id)
            )
            domain = system.storage_domains_service().storage_domain_service(sd.id)
            domain.vms_service().vm_service(laid["vm_id"]).register(cluster=types.Cluster(name="Default"))
            system.vms_service().vm_service(laid["vm_id"]).start()
            wait_for(lambda: system.vms_service().vm_service(laid["vm_id"]).get().status == types.VmStatus.UP)
        base_sum = sha256(images / chain_disk / base)
        sim.kill()
        sim.start()  # the VM recorded as up gets its qemu back, over the share's chain
        with sim.connect() as conn:
            vm_service = conn.system_service().vms_service().vm_service(laid["vm_id"])
            assert vm_service.get().status == types.VmStatus.UP
            sim.guest_write(chain_disk, 3 * MiB, b"\x66" * 4096)
            vm_service.stop()
            wait_for(lambda: vm_service.get().status == types.VmStatus.DOWN)
            assert read_bytes(images / chain_disk / top, 3 * MiB, 4) == b"\x66" * 4
            assert sha256(images / chain_disk / base) == base_sum
            vm_service.remove()  # its files go from the share
            assert not (images / chain_disk).exists()
        exporter.stop()
