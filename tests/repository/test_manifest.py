"""The manifest: typed, versioned, read and written in one place; old ones still read."""

import json
import os

import pytest

from repository.manifest import FORMAT_VERSION, MANIFEST, Manifest, ManifestDisk
from repository.storage import RepositoryError

VERSION_1 = {
    "vm_id": "11111111-1111-1111-1111-111111111111",
    "vm_name": "web01",
    "backup_id": "22222222-2222-2222-2222-222222222222",
    "strategy": "image_transfer",
    "type": "incremental",
    "parent_backup_id": "33333333-3333-3333-3333-333333333333",
    "engine_snapshot_id": "44444444-4444-4444-4444-444444444444",
    "consistency": "filesystem",
    "created": "2026-11-27T10:00:00+00:00",
    "ovf": "vm.ovf",
    "checksum_algorithm": "sha256 of each stored file",
    "disks": [
        {
            "disk_id": "55555555-5555-5555-5555-555555555555",
            "alias": "web01_os",
            "file": "55555555-5555-5555-5555-555555555555.qcow2",
            "format": "qcow2",
            "virtual_size": 1024,
            "stored_size": 512,
            "checksum": "sha256:ab",
            "disk_format": "cow",
            "sparse": True,
            "backup_enabled": False,
            "storage_domain_id": "66666666-6666-6666-6666-666666666666",
            "parent_file": "../33333333-3333-3333-3333-333333333333/55555555-5555-5555-5555-555555555555.qcow2",
        }
    ],
}


def test_it_reads_a_manifest_written_before_versions_were_recorded(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps(VERSION_1))
    manifest = Manifest.read(tmp_path)
    assert manifest.format_version == 1
    assert (manifest.base_kind, manifest.base_id) == ("snapshot", VERSION_1["engine_snapshot_id"])
    assert manifest.disk("web01_os").parent_file == VERSION_1["disks"][0]["parent_file"]
    assert manifest.disk("55555555-5555-5555-5555-555555555555").stored_size == 512


def test_it_reads_a_version_1_full_without_a_kept_snapshot(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps(VERSION_1 | {"format_version": 1, "engine_snapshot_id": None}))
    assert (Manifest.read(tmp_path).base_kind, Manifest.read(tmp_path).base_id) == (None, None)


def sample(**changes) -> Manifest:
    fields = {
        "vm_id": "v",
        "vm_name": "web01",
        "backup_id": "b",
        "strategy": "image_transfer",
        "type": "full",
        "consistency": "crash",
        "created": "2026-11-28T00:00:00+00:00",
        "disks": [ManifestDisk("d", "web01_os", "d.qcow2", "qcow2", 1024, 512, "blake3:ab")],
    }
    return Manifest(**(fields | changes))


def test_it_writes_the_current_version_and_reads_it_back(tmp_path):
    manifest = sample(base_kind="checkpoint", base_id="c1")
    manifest.write(tmp_path)
    body = json.loads((tmp_path / MANIFEST).read_text())
    assert body["format_version"] == FORMAT_VERSION == 2
    assert "engine_snapshot_id" not in body
    assert Manifest.read(tmp_path) == manifest
    assert not list(tmp_path.glob(".*.part")), "written through a temporary name"


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "is corrupt"),
        (json.dumps({"vm_id": "v"}), "is corrupt"),
        (json.dumps(VERSION_1 | {"disks": [{"alias": "x"}]}), "is corrupt"),
        (json.dumps(VERSION_1 | {"format_version": 99}), "has format version 99"),
    ],
)
def test_it_refuses_a_corrupt_or_newer_manifest_with_a_message(tmp_path, text, message):
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(RepositoryError, match=message):
        Manifest.read(tmp_path)


def test_it_says_a_directory_without_manifest_is_no_backup(tmp_path):
    with pytest.raises(RepositoryError, match="has no manifest: it is not a complete backup"):
        Manifest.read(tmp_path)


def test_it_checksums_files_with_blake3_and_still_reads_sha256(tmp_path):
    import hashlib

    import blake3

    from repository.storage import checksum_file

    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "disk.qcow2"
    path.write_bytes(data)
    assert checksum_file(open(path, "rb")) == f"blake3:{blake3.blake3(data).hexdigest()}"  # noqa: SIM115
    assert checksum_file(open(path, "rb"), "sha256") == f"sha256:{hashlib.sha256(data).hexdigest()}"  # noqa: SIM115
    path.write_bytes(b"")
    assert checksum_file(open(path, "rb")) == f"blake3:{blake3.blake3(b'').hexdigest()}"  # noqa: SIM115


def test_it_checksums_a_file_while_another_process_writes_it(tmp_path):
    """As an SSH copy lands: odd-sized writes with pauses, so that reads end mid-page and wait."""
    import subprocess
    import sys

    from repository.storage import GrowingFileChecksum, checksum_file

    path = tmp_path / "disk.qcow2"
    writer = (
        "import os,sys,time\n"
        "for n in range(40):\n"
        " sys.stdout.buffer.write(os.urandom(1024 * 1024 + 4097 * n));sys.stdout.flush();time.sleep(0.01)\n"
    )
    with open(path, "wb") as out:
        checksum = GrowingFileChecksum(path)
        subprocess.run([sys.executable, "-c", writer], stdout=out, check=True)
    assert checksum.finish() == checksum_file(open(path, "rb"))  # noqa: SIM115
    assert path.stat().st_size == 40 * 1024 * 1024 + 4097 * sum(range(40))


def test_it_refuses_a_manifest_changed_after_it_was_written(tmp_path):
    sample().write(tmp_path)
    body = json.loads((tmp_path / MANIFEST).read_text())
    assert body["manifest_checksum"].startswith("blake3:")
    body["disks"][0]["checksum"] = "blake3:cd"  # someone "fixes" a checksum by hand
    (tmp_path / MANIFEST).write_text(json.dumps(body))
    with pytest.raises(RepositoryError, match="does not match its own checksum"):
        Manifest.read(tmp_path)


@pytest.mark.parametrize(
    "disk, said",
    [
        ({"file": "/var/lib/other/disk.qcow2"}, "disk web01_os is stored in '/var/lib/other/disk.qcow2'"),
        ({"file": "../../../other/disk.qcow2"}, "disk web01_os is stored in '../../../other/disk.qcow2'"),
        ({"file": ".."}, "disk web01_os is stored in '..'"),
        ({"file": "sub/disk.qcow2"}, "disk web01_os is stored in 'sub/disk.qcow2'"),
        ({"parent_file": "/etc/base.qcow2"}, "disk web01_os builds on '/etc/base.qcow2', not on a file"),
        ({"parent_file": "../../x/d.qcow2"}, "disk web01_os builds on '../../x/d.qcow2', not on a file"),
        ({"parent_file": "../p/../../d.qcow2"}, "disk web01_os builds on '../p/../../d.qcow2'"),
    ],
)
def test_it_refuses_a_manifest_naming_a_file_outside_its_point(tmp_path, disk, said):
    """Even with its own checksum computed again (anyone can): a manifest names plain file names."""
    manifest = sample()
    for field_name, value in disk.items():
        setattr(manifest.disks[0], field_name, value)
    (tmp_path / MANIFEST).write_bytes(manifest.to_json())
    with pytest.raises(RepositoryError, match="a manifest may name only files in its own backup's directory") as e:
        Manifest.read(tmp_path)
    assert f"is not trusted: {said}" in str(e.value)


def test_it_refuses_an_ovf_named_outside_its_point(tmp_path):
    (tmp_path / MANIFEST).write_bytes(sample(ovf="../../elsewhere.ovf").to_json())
    with pytest.raises(RepositoryError, match="is not trusted: its OVF is '../../elsewhere.ovf'"):
        Manifest.read(tmp_path)


def test_it_reads_a_kept_parent_file_and_refuses_a_version_2_manifest_without_its_own_checksum(tmp_path):
    manifest = sample()
    manifest.disks[0].parent_file = "../33333333-3333-3333-3333-333333333333/d.qcow2"
    manifest.write(tmp_path)
    assert Manifest.read(tmp_path) == manifest
    body = json.loads((tmp_path / MANIFEST).read_text())
    del body["manifest_checksum"]  # as an edit would leave it, so that no checksum disagrees
    (tmp_path / MANIFEST).write_text(json.dumps(body))
    with pytest.raises(RepositoryError, match="is not trusted: it has no checksum of its own"):
        Manifest.read(tmp_path)


def test_it_checksums_a_sparse_file_as_its_bytes_holes_included(tmp_path):
    """Holes are hashed as the zeros they read as, without being read: the checksum is the bytes'."""
    import blake3

    from repository.storage import HASH_CHUNK, checksum_file

    path = tmp_path / "disk.raw"
    size = 3 * HASH_CHUNK + 4097
    islands = {0: os.urandom(5000), HASH_CHUNK - 100: os.urandom(300), 2 * HASH_CHUNK + 77: os.urandom(HASH_CHUNK)}
    content = bytearray(size)
    with open(path, "wb") as f:
        f.truncate(size)  # a hole to the end, too
        for offset, data in islands.items():
            f.seek(offset)
            f.write(data)
            content[offset : offset + len(data)] = data
    assert path.stat().st_blocks * 512 < size // 2, "the file is sparse"
    assert checksum_file(open(path, "rb")) == f"blake3:{blake3.blake3(bytes(content)).hexdigest()}"  # noqa: SIM115
