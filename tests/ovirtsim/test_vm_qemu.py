"""A running VM's qemu (qemu-storage-daemon over QMP): guest I/O, bitmaps, backups, snapshots, merges."""

import http.client
import json
import shutil
import ssl
import tempfile
import uuid
from pathlib import Path

import pytest

from ovirtsim import qemu
from ovirtsim.imageio import ImageioDaemon
from ovirtsim.pki import PKI
from ovirtsim.vm_qemu import DiskChain, QemuError, VmQemu

MiB = 1024**2
SIZE = 8 * MiB
GRANULARITY = 64 * 1024

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-storage-daemon") is None, reason="qemu-storage-daemon (qemu-system-common) is not installed"
)


@pytest.fixture
def run_dir():
    # Unix socket paths are short; pytest's tmp_path can be long.
    path = Path(tempfile.mkdtemp(prefix="vmq-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def vm(run_dir):
    vm = VmQemu(str(uuid.uuid4()), run_dir)
    yield vm
    vm.stop()


@pytest.fixture(scope="module")
def imageio():
    state = Path(tempfile.mkdtemp(prefix="vmq-io-"))
    pki = PKI(state / "pki")
    pki.ensure()
    daemon = ImageioDaemon(
        state, cert_file=pki.cert_file, key_file=pki.key_file, ca_file=pki.ca_file, run_dir=state / "run"
    )
    daemon.start()
    yield daemon
    daemon.stop()
    shutil.rmtree(state, ignore_errors=True)


def disk(tmp_path: Path, name: str = "d1", *, layers: int = 1, base_fmt: str = "qcow2") -> DiskChain:
    volumes = []
    for i in range(layers):
        path = tmp_path / name / f"v{i}"
        fmt = base_fmt if i == 0 else "qcow2"
        qemu.create(path, fmt=fmt, size=SIZE, backing=volumes[-1][1] if volumes else None)
        volumes.append((f"{name}-v{i}", path, fmt))
    return DiskChain(name, volumes)


def export_read(url: str, offset: int = 0, length: int = SIZE) -> bytes:
    from urllib.parse import urlparse

    from ovirt_imageio._internal import nbd

    buf = bytearray(length)
    with nbd.open(urlparse(url)) as client:
        client.readinto(offset, memoryview(buf))
    return bytes(buf)


def nbd_uri(url: str) -> str:
    sock, name = url.removeprefix("nbd:unix:").split(":exportname=")
    return f"nbd+unix:///{name}?socket={sock}"


def dirty_extents(imageio: ImageioDaemon, url: str) -> list[tuple[int, int]]:
    """The dirty ranges imageio serves for a ticket on `url` (as a backup client asks for them)."""
    ticket = str(uuid.uuid4())
    imageio.add_ticket(
        {"uuid": ticket, "size": SIZE, "url": url, "timeout": 60, "ops": ["read"], "dirty": True, "sparse": True}
    )
    try:
        context = ssl.create_default_context(cafile=str(imageio.ca_file))
        conn = http.client.HTTPSConnection("127.0.0.1", imageio.port, context=context)
        conn.request("GET", f"/images/{ticket}/extents?context=dirty")
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body
        conn.close()
    finally:
        imageio.remove_ticket(ticket)
    return [(e["start"], e["length"]) for e in json.loads(body) if e["dirty"]]


def node_names(vm: VmQemu) -> set[str]:
    return {n["node-name"] for n in vm._qmp.execute("query-named-block-nodes", flat=True)}


def test_it_lands_guest_writes_in_the_active_volume(vm, tmp_path):
    chain = disk(tmp_path, layers=2)
    vm.start([chain])
    vm.write("d1", MiB, b"x" * 4096)
    assert vm.read("d1", MiB, 4096) == b"x" * 4096
    vm.stop()
    assert not vm.running
    top = chain.volumes[-1][1]
    qemu.run("qemu-io", "-f", "qcow2", "-c", f"read -P 0x78 {MiB} 4096", str(top))
    # Only the active volume was written.
    qemu.run("qemu-io", "-f", "qcow2", "-c", f"read -P 0 {MiB} 4096", str(chain.volumes[0][1]))


def test_it_refuses_a_write_outside_the_disk(vm, tmp_path):
    vm.start([disk(tmp_path)])
    with pytest.raises(QemuError, match="outside disk"):
        vm.write("d1", SIZE - 10, b"x" * 20)
    with pytest.raises(QemuError, match="not plugged"):
        vm.write("nope", 0, b"x")


def test_it_serves_the_point_in_time_while_the_guest_keeps_writing(vm, tmp_path, run_dir):
    vm.start([disk(tmp_path)])
    vm.write("d1", 0, b"a" * MiB)
    before = vm.read("d1", 0, SIZE)
    urls = vm.begin_backup(
        "b1", disks={"d1": None}, checkpoint="cp1", checkpoint_disks={"d1"}, scratch_dir=run_dir / "scratch"
    )
    vm.write("d1", 0, b"b" * MiB)
    vm.write("d1", 4 * MiB, b"c" * MiB)
    assert vm.read("d1", 0, 1) == b"b"
    assert export_read(urls["d1"]) == before
    reference = tmp_path / "before.raw"
    reference.write_bytes(before)
    qemu.run("qemu-img", "compare", "-f", "raw", "-F", "raw", str(reference), nbd_uri(urls["d1"]))
    vm.end_backup("b1")


def test_it_exports_exactly_the_changes_since_the_checkpoint(vm, tmp_path, run_dir, imageio):
    vm.start([disk(tmp_path)])
    vm.write("d1", 0, b"a" * MiB)
    vm.begin_backup("b1", disks={"d1": None}, checkpoint="cp1", checkpoint_disks={"d1"}, scratch_dir=run_dir)
    vm.write("d1", 2 * MiB, b"d" * GRANULARITY)  # during the full: belongs to the next incremental
    vm.end_backup("b1")
    vm.write("d1", 5 * MiB, b"e" * 2 * GRANULARITY)
    urls = vm.begin_backup("b2", disks={"d1": "cp1"}, checkpoint="cp2", checkpoint_disks={"d1"}, scratch_dir=run_dir)
    vm.write("d1", 7 * MiB, b"f" * GRANULARITY)  # after: in neither
    assert dirty_extents(imageio, urls["d1"]) == [(2 * MiB, GRANULARITY), (5 * MiB, 2 * GRANULARITY)]
    assert export_read(urls["d1"], 7 * MiB, GRANULARITY) == bytes(GRANULARITY)
    vm.end_backup("b2")
    urls = vm.begin_backup("b3", disks={"d1": "cp2"}, checkpoint=None, checkpoint_disks=set(), scratch_dir=run_dir)
    assert dirty_extents(imageio, urls["d1"]) == [(7 * MiB, GRANULARITY)]
    vm.end_backup("b3")


def test_it_serves_a_backup_to_the_imageio_client(vm, tmp_path, run_dir, imageio):
    """What a backup application does with the export: a ticket, then imageio's own client."""
    from ovirt_imageio import client

    vm.start([disk(tmp_path)])
    vm.write("d1", 0, b"a" * MiB)
    vm.write("d1", 6 * MiB, b"b" * GRANULARITY)
    reference = tmp_path / "at-backup.raw"
    reference.write_bytes(vm.read("d1", 0, SIZE))
    urls = vm.begin_backup("b1", disks={"d1": None}, checkpoint="cp1", checkpoint_disks={"d1"}, scratch_dir=run_dir)
    ticket = str(uuid.uuid4())
    imageio.add_ticket({"uuid": ticket, "size": SIZE, "url": urls["d1"], "timeout": 60, "ops": ["read"]})
    try:
        vm.write("d1", 0, b"c" * MiB)  # the guest goes on meanwhile
        out = tmp_path / "backup.qcow2"
        client.download(f"{imageio.images_url}/{ticket}", str(out), str(imageio.ca_file), fmt="qcow2")
    finally:
        imageio.remove_ticket(ticket)
    vm.end_backup("b1")
    qemu.run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(reference), str(out))


def test_it_keeps_bitmaps_across_stop_and_start(vm, tmp_path):
    chain = disk(tmp_path)
    vm.start([chain])
    vm.add_bitmap("d1", "cp1")
    vm.stop()
    assert [b["flags"] for b in qemu.bitmaps(chain.volumes[-1][1])] == [["auto"]]
    vm.start([chain])
    assert vm.bitmaps("d1") == [{"name": "cp1", "recording": True, "inconsistent": False}]


def test_it_leaves_bitmaps_inconsistent_after_a_crash(vm, tmp_path, run_dir):
    chain = disk(tmp_path)
    vm.start([chain])
    vm.add_bitmap("d1", "cp1")
    vm.add_bitmap("d1", "cp2")
    vm.stop()  # the bitmaps are stored in the image
    vm.start([chain])
    vm.add_bitmap("d1", "cp3")  # qemu stores a new bitmap only when it closes the image
    vm.write("d1", 0, b"x" * 512)
    vm.crash()
    assert not vm.running
    assert sorted(b["name"] for b in qemu.bitmaps(chain.volumes[-1][1])) == ["cp1", "cp2"]
    assert "in-use" in qemu.bitmaps(chain.volumes[-1][1])[0]["flags"]
    vm.start([chain])
    assert sorted(vm.bitmaps("d1"), key=lambda b: b["name"]) == [
        {"name": "cp1", "recording": False, "inconsistent": True},
        {"name": "cp2", "recording": False, "inconsistent": True},
    ]
    with pytest.raises(QemuError, match="inconsistent"):
        vm.begin_backup("b1", disks={"d1": "cp1"}, checkpoint="cp2", checkpoint_disks={"d1"}, scratch_dir=run_dir)
    with pytest.raises(QemuError, match="does not exist"):
        vm.begin_backup("b1", disks={"d1": "cp9"}, checkpoint="cp2", checkpoint_disks={"d1"}, scratch_dir=run_dir)
    vm.remove_bitmap("d1", "cp1")
    vm.remove_bitmap("d1", "cp2")
    assert vm.bitmaps("d1") == []
    vm.stop()
    assert qemu.bitmaps(chain.volumes[-1][1]) == []
    assert list(run_dir.glob("*.scratch.qcow2")) == []


def test_it_leaves_nothing_behind_when_a_backup_ends(vm, tmp_path, run_dir):
    vm.start([disk(tmp_path, "d1"), disk(tmp_path, "d2", base_fmt="raw")])
    vm.add_bitmap("d1", "cp1")
    nodes = node_names(vm)
    scratch = run_dir / "scratch"
    urls = vm.begin_backup(
        "b1", disks={"d1": "cp1", "d2": None}, checkpoint="cp2", checkpoint_disks={"d1"}, scratch_dir=scratch
    )
    assert set(urls) == {"d1", "d2"}
    assert len(list(scratch.iterdir())) == 2
    vm.end_backup("b1")
    vm.end_backup("b1")  # idempotent
    assert list(scratch.iterdir()) == []
    assert node_names(vm) == nodes
    assert not vm._qmp.execute("query-block-jobs")
    assert not vm._qmp.execute("query-block-exports") or all(
        not e["id"].startswith("x") for e in vm._qmp.execute("query-block-exports")
    )
    assert {b["name"] for b in vm.bitmaps("d1")} == {"cp1", "cp2"}
    assert vm.bitmaps("d2") == []


def test_it_snapshots_a_running_disk_and_carries_its_bitmaps(vm, tmp_path, run_dir, imageio):
    chain = disk(tmp_path)
    vm.start([chain])
    vm.add_bitmap("d1", "cp1")
    vm.write("d1", 0, b"a" * GRANULARITY)
    overlay = tmp_path / "d1" / "v1"
    qemu.create(overlay, fmt="qcow2", size=SIZE, backing=chain.volumes[0][1])
    vm.snapshot("d1", "d1-v1", overlay)
    vm.write("d1", MiB, b"b" * GRANULARITY)
    assert vm.read("d1", 0, 2) == b"aa"
    assert vm.bitmaps("d1") == [{"name": "cp1", "recording": True, "inconsistent": False}]
    urls = vm.begin_backup("b1", disks={"d1": "cp1"}, checkpoint=None, checkpoint_disks=set(), scratch_dir=run_dir)
    assert dirty_extents(imageio, urls["d1"]) == [(0, GRANULARITY), (MiB, GRANULARITY)]
    vm.end_backup("b1")
    vm.stop()
    qemu.run("qemu-io", "-f", "qcow2", "-c", f"read -P 0x62 {MiB} {GRANULARITY}", str(overlay))
    qemu.run("qemu-io", "-f", "qcow2", "-c", f"read -P 0 {MiB} {GRANULARITY}", str(chain.volumes[0][1]))
    assert [b["name"] for b in qemu.bitmaps(overlay)] == ["cp1"]


@pytest.mark.parametrize("active", [True, False], ids=["active", "internal"])
def test_it_merges_a_volume_live_keeping_data_and_bitmaps(vm, tmp_path, run_dir, imageio, active):
    chain = disk(tmp_path, layers=2)
    vm.start([chain])
    vm.add_bitmap("d1", "cp1")  # on v1 only
    vm.write("d1", 0, b"t" * GRANULARITY)
    changed = [(0, GRANULARITY)]
    paths = [v[1] for v in chain.volumes]
    if not active:
        paths.append(tmp_path / "d1" / "v2")
        qemu.create(paths[-1], fmt="qcow2", size=SIZE, backing=paths[1])
        vm.snapshot("d1", "d1-v2", paths[-1])
        vm.write("d1", 2 * MiB, b"s" * GRANULARITY)
        changed.append((2 * MiB, GRANULARITY))
    expected = vm.read("d1", 0, SIZE)
    vm.commit("d1", "d1-v1", "d1-v0")
    assert vm.read("d1", 0, SIZE) == expected
    assert vm.bitmaps("d1") == [{"name": "cp1", "recording": True, "inconsistent": False}]
    vm.write("d1", MiB, b"u" * GRANULARITY)
    urls = vm.begin_backup("b1", disks={"d1": "cp1"}, checkpoint=None, checkpoint_disks=set(), scratch_dir=run_dir)
    assert dirty_extents(imageio, urls["d1"]) == sorted([*changed, (MiB, GRANULARITY)])
    vm.end_backup("b1")
    expected = vm.read("d1", 0, SIZE)
    vm.stop()
    del paths[1]
    # The chain on disk (headers as qemu left them) reads as the guest saw it.
    raw = tmp_path / "out.raw"
    qemu.run("qemu-img", "convert", "-O", "raw", str(paths[-1]), str(raw))
    assert raw.read_bytes() == expected
    assert [v["filename"] for v in qemu.info(paths[-1], chain=True)] == [str(p) for p in reversed(paths)]
    assert [b["name"] for b in qemu.bitmaps(paths[0])] == ["cp1"]


def test_it_hotplugs_and_unplugs_a_disk(vm, tmp_path):
    vm.start([disk(tmp_path, "d1")])
    chain = disk(tmp_path, "d2")
    vm.hotplug(chain)
    vm.write("d2", 0, b"z" * 512)
    with pytest.raises(QemuError, match="already plugged"):
        vm.hotplug(chain)
    vm.unplug("d2")
    with pytest.raises(QemuError, match="not plugged"):
        vm.read("d2", 0, 1)
    # Nothing holds it any more: qemu-img can write it.
    qemu.add_bitmap(chain.volumes[0][1], "cold")
    qemu.run("qemu-io", "-f", "qcow2", "-c", "read -P 0x7a 0 512", str(chain.volumes[0][1]))


def test_it_lets_a_transfer_read_a_volume_below_the_active_one(vm, tmp_path, run_dir):
    chain = disk(tmp_path, layers=2)
    vm.start([chain])
    server = qemu.NbdServer(chain.volumes[0][1], run_dir / "t.sock", fmt="qcow2", read_only=True)
    server.start()
    try:
        vm.write("d1", 0, b"w" * 512)
        qemu.run("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", str(chain.volumes[0][1]), server.url)
    finally:
        server.stop()
    # After a live snapshot the old active volume is read-only in qemu: a transfer can read it too.
    overlay = tmp_path / "d1" / "v2"
    qemu.create(overlay, fmt="qcow2", size=SIZE, backing=chain.volumes[1][1])
    vm.snapshot("d1", "d1-v2", overlay)
    server = qemu.NbdServer(chain.volumes[1][1], run_dir / "t.sock", fmt="qcow2", read_only=True)
    server.start()
    try:
        vm.write("d1", 0, b"v" * 512)
        assert export_read(server.url, 0, 512) == b"w" * 512
    finally:
        server.stop()


def test_it_merges_into_a_raw_base(vm, tmp_path):
    chain = disk(tmp_path, layers=2, base_fmt="raw")
    vm.start([chain])
    vm.write("d1", 3 * MiB, b"r" * GRANULARITY)
    vm.commit("d1", "d1-v1", "d1-v0")
    vm.write("d1", 5 * MiB, b"s" * GRANULARITY)
    assert vm.volume_ids("d1") == ["d1-v0"]
    vm.stop()
    data = chain.volumes[0][1].read_bytes()
    assert data[3 * MiB : 3 * MiB + GRANULARITY] == b"r" * GRANULARITY
    assert data[5 * MiB : 5 * MiB + GRANULARITY] == b"s" * GRANULARITY


def test_it_grows_a_running_disk_and_its_bitmaps(vm, tmp_path):
    vm.start([disk(tmp_path)])
    vm.add_bitmap("d1", "cp1")
    vm.resize("d1", 2 * SIZE)
    assert vm.size("d1") == 2 * SIZE
    vm.write("d1", SIZE + MiB, b"y" * 4096)
    assert vm.read("d1", SIZE + MiB, 4096) == b"y" * 4096
    # The bitmap grew with the image and records the write past the old end.
    node = next(n for n in vm._qmp.execute("query-named-block-nodes", flat=True) if n.get("dirty-bitmaps"))
    assert [(b["name"], b["count"]) for b in node["dirty-bitmaps"]] == [("cp1", GRANULARITY)]
