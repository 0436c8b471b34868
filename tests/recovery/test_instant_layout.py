"""The temporary storage domain an instant restore boots from, as the engine reads it (vdsm's file
data domain layout, an OVF store) and as the VM's qemu reads it (each layer its own node)."""

import hashlib
import io
import json
import os
import subprocess
import tarfile

import pytest

from inventory.models import VM
from recovery.instant.errors import InstantError
from recovery.instant.layout import instant_root, lay_out, remove_layout, top_bytes
from repository.models import BackupPoint
from tests.helpers import backup


def meta(path) -> dict:
    fields = {}
    for line in path.read_text().splitlines():
        if line == "EOF":
            break
        key, _, value = line.partition("=")
        fields[key] = value
    return fields


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def web01_chain(manager, destination, demo_sim):
    """web01 (two disks) backed up full, written to by its guest, then incrementally."""
    vm = VM.objects.get(manager=manager, name="web01")
    full = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    demo_sim.guest_write(str(vm.disks.get(name="web01_data").engine_id), 4096, b"after the full backup")
    job = backup(vm, destination, type="incremental")
    assert job.status == "succeeded", job.error
    incremental = BackupPoint.objects.get(pk=job.result["point"])
    assert incremental.parent_id == full.pk
    return incremental


def chain_spec(image_dir, volumes: list[str], fmt_of) -> dict:
    """The disk as the VM's qemu opens it: each volume its own node, backing named explicitly."""
    spec = None
    for volume in volumes:
        fmt = fmt_of(volume)
        node = {"driver": fmt, "file": {"driver": "file", "filename": str(image_dir / volume)}}
        if fmt == "qcow2":
            node["backing"] = spec
        spec = node
    return spec


def test_it_lays_out_a_data_domain_of_links_and_new_top_layers(web01_chain, tmp_path):
    point = web01_chain
    stored = {p: sha256(p) for p in point.directory.path.parent.rglob("*.qcow2")}
    root = instant_root(point, 7)
    layout = lay_out(point=point, root=root, name="web01-instant")
    domain = layout.domain_dir
    assert root.parent.name == ".instant" and root.parent.parent == point.destination.checked_path()
    metadata = meta(domain / "dom_md" / "metadata")
    assert metadata["CLASS"] == "Data" and metadata["SDUUID"] == layout.domain_id and metadata["VERSION"] == "5"
    for name in ("ids", "leases", "inbox", "outbox", "xleases"):
        assert (domain / "dom_md" / name).is_file()
    assert len(layout.disks) == 2
    for disk in layout.disks:
        image_dir = domain / "images" / disk.image_id
        # The chain: the point's own files (the same inodes, never copies), then a new writable top.
        for linked in disk.chain:
            assert any(os.path.samefile(linked, image_dir / v) for v in os.listdir(image_dir) if "." not in v)
        top = meta(image_dir / f"{disk.volume_id}.meta")
        assert (top["VOLTYPE"], top["FORMAT"], top["IMAGE"], top["DOMAIN"]) == (
            "LEAF",
            "COW",
            disk.image_id,
            layout.domain_id,
        )
        volumes, current = [], disk.volume_id
        while current != "00000000-0000-0000-0000-000000000000":
            volumes.insert(0, current)
            current = meta(image_dir / f"{current}.meta")["PUUID"]
        assert len(volumes) == len(disk.chain) + 1
        assert meta(image_dir / f"{volumes[0]}.meta")["VOLTYPE"] == "INTERNAL"

        def fmt_of(volume, d=image_dir):
            return "qcow2" if meta(d / f"{volume}.meta")["FORMAT"] == "COW" else "raw"

        # Read as the VM's qemu reads it, the disk is the backup's disk.
        booted = "json:" + json.dumps(chain_spec(image_dir, volumes, fmt_of))
        stored_top = point.directory.path / point.manifest().disk(disk.original_id).file
        compared = subprocess.run(
            ["qemu-img", "compare", "-U", booted, str(stored_top)], capture_output=True, text=True
        )
        assert compared.returncode == 0, compared.stdout + compared.stderr
    # The OVF store: the VM's OVF with every id new, and no id of the backed-up VM left.
    stores = [m for m in domain.glob("images/*/*.meta") if meta(m)["DISKTYPE"] == "OVFS"]
    assert len(stores) == 1
    assert json.loads(meta(stores[0])["DESCRIPTION"])["Disk Description"] == "OVF_STORE"
    with tarfile.open(fileobj=io.BytesIO(stores[0].with_suffix("").read_bytes())) as tar:
        names = tar.getnames()
        ovf = tar.extractfile(f"{layout.vm_id}.ovf").read().decode()
    assert sorted(names) == sorted([f"{layout.vm_id}.ovf", "info.json"])
    assert str(point.vm.engine_id) not in ovf
    for disk in layout.disks:
        assert disk.original_id not in ovf and f"{disk.image_id}/{disk.volume_id}" in ovf
    assert layout.domain_id in ovf
    assert top_bytes(root, layout.domain_id, [d.to_json() for d in layout.disks]) > 0
    remove_layout(root)
    assert not root.exists()
    # The backup is as it was: same files, same bytes.
    assert {p: sha256(p) for p in point.directory.path.parent.rglob("*.qcow2")} == stored


def test_it_leaves_the_nics_out_for_a_proof(web01_chain):
    layout = lay_out(point=web01_chain, root=instant_root(web01_chain, 8), name="proof", with_nics=False)
    store = next(m for m in layout.domain_dir.glob("images/*/*.meta") if meta(m)["DISKTYPE"] == "OVFS")
    with tarfile.open(fileobj=io.BytesIO(store.with_suffix("").read_bytes())) as tar:
        ovf = tar.extractfile(f"{layout.vm_id}.ovf").read().decode()
    assert "<rasd:ResourceType>10</rasd:ResourceType>" not in ovf and "ResourceType>17<" in ovf
    remove_layout(layout.root)


def test_it_refuses_a_damaged_point(web01_chain):
    point = web01_chain
    stored = point.directory.path / point.manifest().disks[0].file
    os.truncate(stored, 128 * 1024)  # a layer cut short: its tables point past its end
    with pytest.raises(InstantError, match="damaged"):
        lay_out(point=point, root=instant_root(point, 9), name="x")
    assert not instant_root(point, 9).exists()
