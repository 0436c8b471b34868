"""A corrupt backup never restores silently: every file is checked against its manifest as its data
moves, and a mismatch fails the restore with the file and both checksums, its disk not finalized
but removed, leaving nothing on the engine. A
manifest is held to the database, names no file outside its point, and the OVF is checksummed and
refused when it declares entities, all before anything is made on the engine."""

import json
import os
import shutil
import subprocess

import blake3
import pytest

from inventory.models import VM
from jobs.models import Job
from jobs.runner import run_job
from ovirt.transfers import OPEN_TRANSFER_PHASES
from repository.models import BackupPoint
from repository.verify import request_verify
from tests.helpers import OpenWatch, backup, reseal_ovf, restore, restore_disks

MiB = 1024**2


def flip_bytes(path, offset=None):
    """Flip 16 bytes in the data part of an image (past its QCOW2 metadata)."""
    size = path.stat().st_size
    offset = size // 2 if offset is None else offset
    with open(path, "r+b") as f:
        f.seek(offset)
        data = f.read(16)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in data))


def truncate(path):
    os.truncate(path, 500 * 1024)


def zero_header(path):
    with open(path, "r+b") as f:
        f.write(bytes(512))


@pytest.fixture
def engine_state(demo_sim):
    """What a restore could make on the engine: disks, VMs, image transfers."""

    def state():
        with demo_sim.connect() as conn:
            system = conn.system_service()
            transfers = system.image_transfers_service().list()
            return (
                {d.id for d in system.disks_service().list()},
                {v.name for v in system.vms_service().list()},
                {t.id for t in transfers},
                {t.id for t in transfers if t.phase in OPEN_TRANSFER_PHASES},
            )

    return state


def made_since(before, now) -> set[str]:
    """What changed on the engine between two states: disks and VMs made or gone, image transfers
    started (a finished transfer leaves the engine's list after a while, so only new ones count)."""
    (disks, vms, transfers, _), (disks_now, vms_now, transfers_now, _) = before, now
    return (
        {f"disk {d}" for d in disks ^ disks_now}
        | {f"VM {v}" for v in vms ^ vms_now}
        | {f"transfer {t}" for t in transfers_now - transfers}
    )


def left_since(before, now) -> set[str]:
    """What a failed restore left on the engine: disks and VMs made or gone, image transfers open."""
    (disks, vms, _, _), (disks_now, vms_now, _, open_now) = before, now
    return (
        {f"disk {d}" for d in disks ^ disks_now}
        | {f"VM {v}" for v in vms ^ vms_now}
        | {f"open transfer {t}" for t in open_now}
    )


@pytest.mark.parametrize("damage", [flip_bytes, truncate, zero_header], ids=["flipped", "truncated", "no-header"])
def test_it_refuses_to_restore_a_damaged_image(manager, destination, demo_sim, engine_state, damage):
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    (entry,) = point.manifest().disks
    image = point.directory.path / entry.file
    damage(image)
    before = engine_state()

    job = restore(point, f"test01-{damage.__name__}")

    assert job.status == Job.Status.FAILED
    assert job.error.startswith(
        f"The backup is damaged: {image} does not match its checksum: expected {entry.checksum}"
    )
    assert "found blake3:" in job.error
    assert job.error.endswith("was not finalized and is removed; nothing was restored.")
    assert not left_since(before, engine_state())


def test_it_refuses_an_incremental_whose_parent_is_damaged(manager, destination, demo_sim, engine_state):
    vm = VM.objects.get(manager=manager, name="test01")
    full = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    demo_sim.guest_write(str(vm.engine_id), 0, os.urandom(MiB))
    incremental = BackupPoint.objects.get(pk=backup(vm, destination, type="incremental").result["point"])
    assert incremental.parent == full
    (entry,) = full.manifest().disks
    flip_bytes(full.directory.path / entry.file)
    before = engine_state()

    job = restore_disks(incremental, floating=True)

    assert job.status == Job.Status.FAILED
    assert f"{full.directory.path / entry.file} does not match its checksum" in job.error
    assert not left_since(before, engine_state())


def blake3_of(path) -> str:
    return f"blake3:{blake3.blake3(path.read_bytes()).hexdigest()}"


def verify(point) -> Job:
    job = request_verify(origin="cli", points=[point])
    run_job(job.pk)
    job.refresh_from_db()
    point.refresh_from_db()
    return job


def rewrite_manifest(point, change, *, own_checksum: bool) -> None:
    """Edit a point's manifest as someone with write access to the destination could: its own
    checksum dropped, or computed again (it is a plain BLAKE3 of the JSON, anyone can)."""
    path = point.directory.path / "manifest.json"
    body = json.loads(path.read_text())
    del body["manifest_checksum"]
    change(body)
    if own_checksum:
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        body["manifest_checksum"] = f"blake3:{blake3.blake3(canonical).hexdigest()}"
    path.write_text(json.dumps(body))


def test_it_refuses_a_manifest_that_names_another_image_and_never_reads_it(
    manager, destination, demo_sim, engine_state, tmp_path
):
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    directory = point.directory.path
    (entry,) = point.manifest().disks
    image = directory / entry.file
    manifest, original = (directory / "manifest.json").read_bytes(), image.read_bytes()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    foreign = elsewhere / "foreign.qcow2"  # another image, sound, outside the destination
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(foreign), "1M"], check=True)

    def disk(**changes):
        return lambda body: body["disks"][0].update(changes)

    def absolute():
        rewrite_manifest(point, disk(file=str(foreign), checksum=blake3_of(foreign)), own_checksum=False)
        return foreign, "has no checksum of its own"

    def relative():
        upward = os.path.relpath(foreign, directory)  # ../../../elsewhere/foreign.qcow2
        rewrite_manifest(point, disk(file=upward, checksum=blake3_of(foreign)), own_checksum=True)
        return foreign, "a manifest may name only files in its own backup's directory"

    def replaced_as_version_1():
        shutil.copy(foreign, image)  # the image itself overwritten, its manifest made to agree
        change = disk(checksum=blake3_of(foreign))
        rewrite_manifest(point, lambda body: (change(body), body.update(format_version=1)), own_checksum=False)
        return (
            image,
            f"{image} has checksum {blake3_of(foreign)} in its manifest, but the database records {entry.checksum}",
        )

    def linked():
        outside = elsewhere / "moved.qcow2"  # the very image, moved out and linked back in
        image.rename(outside)
        image.symlink_to(outside)
        return outside, f"{image} is a symbolic link (to {outside})"

    def merged_checksum_added():
        # As if a consolidation were under way: a second checksum the file may have, which the
        # database never recorded.
        shutil.copy(foreign, image)
        rewrite_manifest(point, disk(merged_checksum=blake3_of(foreign)), own_checksum=True)
        return (
            image,
            f"{image} has a merged checksum {blake3_of(foreign)} in its manifest, but the database records none",
        )

    for edit in (absolute, relative, replaced_as_version_1, linked, merged_checksum_added):
        target, said = edit()
        before = engine_state()
        with OpenWatch(target) as watch:
            job = restore(point, f"test01-{edit.__name__}")
            assert job.status == Job.Status.FAILED, edit.__name__
            assert job.error.startswith("The backup is damaged: ") and said in job.error, job.error
            assert job.error.endswith("Nothing was restored.")
            assert not made_since(before, engine_state()), edit.__name__
            checked = verify(point)
        assert checked.status == Job.Status.FAILED and point.status == "damaged", edit.__name__
        assert said in point.damage, point.damage
        assert watch.opens == 0, f"{edit.__name__}: {target} was read"
        # As it was written: sound again.
        image.unlink()
        image.write_bytes(original)
        (directory / "manifest.json").write_bytes(manifest)
        with OpenWatch(image) as watch:
            assert verify(point).status == Job.Status.SUCCEEDED
        assert watch.opens > 0, "the watch sees a verify read a file"


def test_it_refuses_an_edited_ovf(manager, destination, demo_sim, engine_state):
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    ovf = point.directory.path / "vm.ovf"
    expected = blake3_of(ovf)
    text = ovf.read_text()
    edited = text.replace("<Description>", "<Description>edited ", 1)
    assert edited != text
    ovf.write_text(edited)
    before = engine_state()

    job = restore(point, "test01-edited-ovf")

    said = f"{ovf} does not match its checksum: expected {expected}, found {blake3_of(ovf)}."
    assert job.status == Job.Status.FAILED and job.error == f"The backup is damaged: {said} Nothing was restored."
    assert not made_since(before, engine_state())
    assert verify(point).status == Job.Status.FAILED and said in point.damage


BILLION_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{n} "{(f"&lol{n - 1};" if n > 1 else "&lol;") * 10}">' for n in range(1, 10))
    + "]>",
    "&lol9;",
)
EXTERNAL = ('<!DOCTYPE ovf [<!ENTITY secret SYSTEM "file:///etc/passwd">]>', "&secret;")


@pytest.mark.parametrize("payload", [EXTERNAL, BILLION_LAUGHS], ids=["external-entity", "billion-laughs"])
def test_it_refuses_an_ovf_declaring_entities_before_making_anything(
    manager, destination, demo_sim, engine_state, payload
):
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    ovf = point.directory.path / "vm.ovf"
    declaration, reference = payload
    text = ovf.read_text()
    head, rest = text.split("?>", 1) if text.startswith("<?xml") else ("", text)
    body = rest.replace("<Description>", f"<Description>{reference}", 1)
    assert body != rest
    reseal_ovf(point, f"{head}?>{declaration}{body}".encode() if head else f"{declaration}{body}".encode())
    before = engine_state()

    job = restore(point, "test01-entities")

    assert job.status == Job.Status.FAILED
    assert job.error.startswith(f"The backup is damaged: {ovf} declares a document type (DOCTYPE)"), job.error
    assert not made_since(before, engine_state()), "the disks were made (and uploaded) before the OVF was refused"
    assert verify(point).status == Job.Status.FAILED and "declares a document type (DOCTYPE)" in point.damage
