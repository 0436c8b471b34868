"""The NFS data plane between the node and the simulated hosts: the simulator's hosts' storage network
(a network namespace with its own rpcbind, ovirtsim/storage_net.py), the node's NFS-Ganesha serving
in it (NFS_NETNS), and a running VM's qemu reading and writing an NFS data domain's volumes with
qemu's own nfs driver (NFSv3), each layer its own node with its backing named."""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from ovirtsim import Simulator, qemu, storage_net
from ovirtsim.vm_qemu import DiskChain, QemuError, VmQemu
from tests.ovirtsim.helpers import add_disk, read_bytes, wait_for
from tests.ovirtsim.test_data_plane import make_vm, snapshot

MiB = 1024**2
SIZE = 4 * MiB

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and 36:36 files need root")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pids(name: str) -> set[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def in_netns(pid: int, netns: str) -> bool:
    try:  # another engine's rpcbind may end meanwhile
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns).st_ino
    except FileNotFoundError:
        return False


@pytest.fixture
def run_dir():
    path = Path(tempfile.mkdtemp(prefix="vmq-nfs-"))  # unix socket paths are short
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def nfs_domain(tmp_path, netns_exporter):
    """A data domain's share served by the node in the hosts' storage network, holding one disk of two
    qcow2 layers (base: 0x11 in its first MiB; top: empty), made before it is served, as vdsm's
    (36:36, 0660). Yields (share, base, top); unexported after."""
    share = tmp_path / "share"
    images = share / "sd1" / "images" / "img1"
    images.mkdir(parents=True)
    base, top = images / "base", images / "top"
    qemu.create(base, fmt="qcow2", size=SIZE)
    qemu.run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x11 0 {MiB}", str(base))
    qemu.create(top, fmt="qcow2", size=SIZE, backing=base)  # "base", relative, as vdsm writes it
    for path in (share / "sd1", share / "sd1" / "images", images, base, top):
        os.chown(path, 36, 36)
    base.chmod(0o660)
    top.chmod(0o660)
    export = netns_exporter.export(directory=share, pseudo=str(share), clients=["127.0.0.1"])
    yield share, base, top
    netns_exporter.unexport(export)


def chain(share: Path, base: Path, top: Path) -> DiskChain:
    return DiskChain(
        "img1",
        [("base", base, "qcow2"), ("top", top, "qcow2")],
        nfs=qemu.NfsShare("127.0.0.1", str(share), share),
    )


def test_it_opens_each_layer_over_nfs_and_writes_only_the_top_one(nfs_domain, storage_sim, run_dir, tmp_path):
    share, base, top = nfs_domain
    before = sha256(base)
    netns = storage_sim.storage_netns
    vm = VmQemu(str(uuid.uuid4()), run_dir, netns=Path(netns))
    vm.start([chain(share, base, top)])
    try:
        assert in_netns(vm._proc.pid, netns)  # the daemon runs in the hosts' storage network
        nodes = {n["node-name"]: n for n in vm._qmp.execute("query-named-block-nodes", flat=True)}
        files = [n for n in nodes.values() if n["drv"] == "nfs"]
        assert sorted(n["file"] for n in files) == sorted(
            f"nfs://127.0.0.1{share}/sd1/images/img1/{name}?uid=36&gid=36" for name in ("base", "top")
        )
        vm.write("img1", MiB // 2, b"\x22" * MiB)  # across base's data and past it
        assert vm.read("img1", 0, 2 * MiB) == b"\x11" * (MiB // 2) + b"\x22" * MiB + b"\0" * (MiB // 2)
    finally:
        vm.stop()
    assert sha256(base) == before  # read-only over NFS: the guest's write is in the top layer only
    expected = tmp_path / "expected.raw"
    expected.write_bytes(b"\x11" * (MiB // 2) + b"\x22" * MiB + b"\0" * (SIZE - MiB - MiB // 2))
    qemu.run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(top), str(expected))
    mapped = json.loads(qemu.run("qemu-img", "map", "--output=json", "-f", "qcow2", str(top)))
    assert [(e["start"], e["length"]) for e in mapped if e["data"] and e["depth"] == 0] == [(MiB // 2, MiB)]


def test_it_refuses_an_nfs_volume_without_the_hosts_storage_network(nfs_domain, run_dir):
    share, base, top = nfs_domain
    vm = VmQemu(str(uuid.uuid4()), run_dir)
    with pytest.raises(QemuError, match=r"volume base is on an NFS share \(127\.0\.0\.1:.*/sd1/images/img1/base\)"):
        vm.start([chain(share, base, top)])
    assert not vm.running


def test_it_keeps_the_hosts_storage_network_through_a_kill_and_removes_it_at_stop(tmp_path):
    """engine.json's storage_netns: a namespace file with rpcbind running in it; a killed engine comes
    back to the same namespace and rpcbind; its stop leaves no rpcbind, mount nor file. (Other engines
    of the run start and stop their own rpcbind meanwhile: this one's is the one in its namespace.)"""
    sim = Simulator(tmp_path / "engine", seed="empty").start()
    try:
        netns = sim.storage_netns
        assert netns == str(tmp_path / "engine" / "storage-net" / "netns")
        assert storage_net.is_mounted(Path(netns))

        def ours() -> set[int]:
            return {pid for pid in pids("rpcbind") if in_netns(pid, netns)}

        (rpcbind,) = ours()
        assert storage_net.accepts(netns, "127.0.0.1", 111) and not storage_net.accepts(None, "127.0.0.1", 111)
        sim.kill()
        assert storage_net.is_mounted(Path(netns)) and ours() == {rpcbind}
        sim.start()
        assert sim.storage_netns == netns and ours() == {rpcbind}
    finally:
        sim.stop()
    # rpcbind outlived the killed engine: init, its parent now, reaps it a moment after it ended.
    deadline = time.monotonic() + 5
    while rpcbind in pids("rpcbind") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rpcbind not in pids("rpcbind")
    assert not storage_net.is_mounted(Path(netns)) and not Path(netns).exists()


def test_it_takes_a_live_snapshot_onto_a_volume_made_on_the_share(nfs_domain, storage_sim, run_dir):
    """The engine makes the new volume beside the others (as vdsm does on its mount), the VM's qemu
    opens it over NFS and writes there from then on."""
    share, base, top = nfs_domain
    vm = VmQemu(str(uuid.uuid4()), run_dir, netns=Path(storage_sim.storage_netns))
    vm.start([chain(share, base, top)])
    try:
        before = sha256(top)
        new = top.with_name("snap")
        qemu.create(new, fmt="qcow2", size=SIZE, backing=top)
        os.chown(new, 36, 36)
        vm.snapshot("img1", "snap", new)
        vm.write("img1", 0, b"\x33" * 4096)
        assert vm.read("img1", 0, 8192) == b"\x33" * 4096 + b"\x11" * 4096
        assert vm.volume_ids("img1") == ["base", "top", "snap"]
    finally:
        vm.stop()
    assert sha256(top) == before


def test_it_serves_an_image_transfer_of_an_nfs_volume_over_nfs(nfs_domain, storage_sim, run_dir, tmp_path):
    """A transfer's qemu-nbd of a volume on an NFS data domain reads it over NFS in the hosts' storage
    network, its chain named (whole), or the volume alone (shallow); without that network it refuses."""
    share, base, top = nfs_domain
    qemu.run("qemu-io", "-f", "qcow2", "-c", f"write -P 0x44 {2 * MiB} {MiB}", str(top))  # before any client
    nfs = qemu.NfsShare("127.0.0.1", str(share), share)
    netns = Path(storage_sim.storage_netns)
    expected = {
        False: b"\x11" * MiB + b"\0" * MiB + b"\x44" * MiB + b"\0" * MiB,
        True: b"\0" * 2 * MiB + b"\x44" * MiB + b"\0" * MiB,
    }
    for shallow, data in expected.items():
        server = qemu.NbdServer(
            top, run_dir / "t.sock", fmt="qcow2", shallow=shallow, nfs=nfs, netns=netns, backing=[(base, "qcow2")]
        )
        server.start()
        try:
            assert in_netns(server.proc.pid, str(netns))
            out = tmp_path / "out.raw"
            qemu.run("qemu-img", "convert", "-f", "raw", "-O", "raw", server.url, str(out))
            assert out.read_bytes() == data
        finally:
            server.stop()
    refused = qemu.NbdServer(top, run_dir / "t.sock", fmt="qcow2", nfs=nfs, backing=[(base, "qcow2")])
    with pytest.raises(QemuError, match=r"top is on an NFS share .* only in their storage network"):
        refused.start()


def nfs_data_domain(engine, share: Path) -> str:
    """An NFS data domain of the engine's data center on `share` (served from here at its own path),
    as an imported one is recorded: the API adds none. Returns its id."""
    sd_id = str(uuid.uuid4())
    (share / sd_id / "images").mkdir(parents=True)
    with engine.store.lock:
        data = next(sd for sd in engine.store["storagedomains"].values() if sd["type"] == "data")
        engine.store["storagedomains"][sd_id] = data | {
            "id": sd_id,
            "name": f"restore-{sd_id[:6]}",
            "path": str(share / sd_id),
            "master": False,
            "address": "127.0.0.1",
            "export_path": str(share),
        }
    return sd_id


def test_it_runs_a_vm_from_an_nfs_data_domain_the_node_serves(storage_sim, netns_exporter, tmp_path):
    """Through the engine: a disk made on an NFS data domain served by the node in the hosts' storage
    network, a VM started with it, the guest writing, a live snapshot: its qemu holds every volume
    over NFS, and the files on the share (vdsm's, 36:36) hold what the guest wrote."""
    share = tmp_path / "share"
    share.mkdir()
    export = netns_exporter.export(directory=share, pseudo=str(share), clients=["127.0.0.1"])
    engine = storage_sim._service.engine
    conn = storage_sim.connect()
    vm = None
    try:
        sd_id = nfs_data_domain(engine, share)
        disk = add_disk(conn, name="on-nfs", size=SIZE, sd_name=f"restore-{sd_id[:6]}")
        (base,) = [p for p in (share / sd_id / "images" / disk.id).iterdir() if not p.name.endswith(".meta")]
        assert (base.stat().st_uid, base.stat().st_gid, base.stat().st_mode & 0o777) == (36, 36, 0o660)
        vm = make_vm(conn, "on-nfs", disks=[disk], status="up")
        storage_sim.guest_write(vm.id, 0, b"\x55" * MiB)
        snapshot(conn, vm.id, "s1")
        storage_sim.guest_write(vm.id, MiB, b"\x66" * MiB)
        vm_qemu = engine.vm_qemus[vm.id]
        assert in_netns(vm_qemu._proc.pid, storage_sim.storage_netns)
        files = {n["file"] for n in vm_qemu._qmp.execute("query-named-block-nodes", flat=True) if n["drv"] == "nfs"}
        top = next(p for p in base.parent.iterdir() if p != base and not p.name.endswith(".meta"))
        assert files == {f"nfs://127.0.0.1{share}/{sd_id}/images/{disk.id}/{p.name}?uid=36&gid=36" for p in (base, top)}
        conn.system_service().vms_service().vm_service(vm.id).stop()
        wait_for(lambda: vm.id not in engine.vm_qemus, what="its qemu gone")
        assert read_bytes(base, 0, 2 * MiB) == b"\x55" * MiB + b"\0" * MiB  # the snapshot's volume
        assert read_bytes(top, 0, 2 * MiB) == b"\x55" * MiB + b"\x66" * MiB  # the chain, read from the top
    finally:
        if vm is not None:
            conn.system_service().vms_service().vm_service(vm.id).remove()
        conn.close()
        netns_exporter.unexport(export)
