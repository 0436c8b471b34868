"""File-level restore of the demo guests' real disks (ovirtsim.guest_files): GPT and MBR, a vfat EFI
partition, ext4 in partitions, on a whole disk and in the guest's LVM, XFS in an LV, NTFS and Btrfs;
every file as the guest wrote it, every folder's archive equal to the guest's tree (names, sizes,
modes, owners, times), and a file the guest changed after a full read from the incremental as it
became and from the full as it was."""

import io
import tarfile
import time
import zipfile

import pytest

from inventory.models import VM
from ovirtsim import guest_files
from recovery.files.browse import download, list_place
from recovery.files.errors import FilesError
from recovery.files.sessions import close_session, open_session
from repository.models import BackupPoint
from tests.helpers import backup

GUESTS = {"web01": ["web01_os"], "db01": ["db01_os"], "app01": ["app01_disk1", "app01_disk3"]}
# What the filesystems themselves hold besides the guest's files.
OWN_ENTRIES = {"ext4": {"lost+found"}, "xfs": set(), "btrfs": set(), "vfat": set(), "ntfs": set()}


def read(session, disk: str, path: str) -> bytes:
    return b"".join(download(session, disk=disk, path=path).chunks)


def archive_members(session, disk: str, key: str, fstype: str) -> dict[str, dict]:
    """The filesystem's root downloaded as its archive: each member's kind, size, mode, owner, time."""
    got = download(session, disk=disk, path=f"/{key}")
    data = b"".join(got.chunks)
    members = {}
    if fstype in ("ntfs", "vfat"):
        assert got.filename.endswith(".zip")
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                kind = "dir" if info.is_dir() else "file"
                members["/" + info.filename.rstrip("/")] = {
                    "kind": kind,
                    "size": info.file_size,
                    "time": info.date_time,
                    "data": archive.read(info) if kind == "file" else None,
                }
        return members
    assert got.filename.endswith(".tar")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for info in archive.getmembers():
            if info.name == ".":
                continue
            kind = "dir" if info.isdir() else "symlink" if info.issym() else "file"
            members["/" + info.name] = {
                "kind": kind,
                "size": info.size,
                "mode": info.mode,
                "owner": (info.uid, info.gid),
                "mtime": info.mtime,
                "target": info.linkname,
                "data": archive.extractfile(info).read() if kind == "file" else None,
            }
    return members


def assert_tree_equal(members: dict[str, dict], fs: guest_files.Filesystem) -> None:
    expected = fs.tree()
    own = {name for name in members if name.strip("/").split("/")[0] in OWN_ENTRIES[fs.fstype]}
    assert set(members) - own == set(expected), (fs.label, sorted(set(members) ^ set(expected)))
    for path, entry in expected.items():
        got = members[path]
        assert got["kind"] == entry.kind, path
        if entry.kind == "file":
            assert (got["size"], got["data"]) == (len(entry.data), entry.data), path
        if fs.fstype in ("ntfs", "vfat"):
            assert got["time"] == time.gmtime(entry.mtime)[:6], path
            continue
        assert got["mtime"] == entry.mtime, path
        if entry.kind == "symlink":
            assert got["target"] == entry.target, path
        else:
            assert (got["mode"], got["owner"]) == (entry.mode, (entry.uid, entry.gid)), path


def test_it_reads_every_demo_guest_filesystem_as_the_guest_wrote_it(manager, destination, demo_sim):
    for vm_name, disks in GUESTS.items():
        vm = VM.objects.get(manager=manager, name=vm_name)
        point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
        session = open_session(point=point, who="tester", origin="cli")
        try:
            for disk in disks:
                found = {fs["key"]: fs for fs in session.disk(disk)["filesystems"]}
                expected = guest_files.filesystems(disk)
                assert set(found) == set(expected), (disk, set(found))
                for key, fs in expected.items():
                    assert not found[key].get("problem"), found[key]
                    assert (found[key]["type"], found[key]["label"]) == (fs.fstype, fs.label), (disk, key)
                    assert 0 < found[key]["used"] < found[key]["bytes"], (disk, key)
                    for path, data in fs.files().items():
                        assert read(session, disk, f"/{key}{path}") == data, (disk, key, path)
                    assert_tree_equal(archive_members(session, disk, key, fs.fstype), fs)
            if vm_name == "web01":
                # A link out of the guest's filesystem is shown as what it is and never followed.
                etc = {e.name: e for e in list_place(session, disk="web01_os", path="/p2/etc")[1].entries}
                assert (etc["escape"].kind, etc["escape"].target) == ("symlink", "../../../../../etc/shadow")
                with pytest.raises(FilesError, match="is a symbolic link to ../../../../../etc/shadow; links are not"):
                    read(session, "web01_os", "/p2/etc/escape")
        finally:
            close_session(session, reason="test over")


def test_it_reads_a_file_from_the_full_as_it_was_and_from_the_incremental_as_it_became(manager, destination, demo_sim):
    """The guest changes a file of the ext4 filesystem in an LV of its LVM between a full and an
    incremental (change block tracking of db01's boot disk)."""
    vm = VM.objects.get(manager=manager, name="db01")
    path, before = "/var/lib/db/data.sql", guest_files.files("db01_os", "vg_db01-root")["/var/lib/db/data.sql"]
    after = before.replace(b"CREATE TABLE", b"CREATE TABLE IF NOT EXISTS") + b"-- changed after the full\n"
    full = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    demo_sim.guest_write_file(str(vm.engine_id), "vg_db01-root", path, after)
    try:
        job = backup(vm, destination, type="incremental")
        incremental = BackupPoint.objects.get(pk=job.result["point"])
        assert (incremental.type, incremental.parent) == ("incremental", full), incremental.note
        for point, expected in ((full, before), (incremental, after)):
            session = open_session(point=point, who="tester", origin="cli")
            try:
                assert read(session, "db01_os", f"/vg_db01-root{path}") == expected, point.type
                assert read(session, "db01_os", "/vg_db01-root/etc/hostname") == b"db01\n"
            finally:
                close_session(session, reason="test over")
    finally:
        # The demo engine is shared: the file as seeded, its time too, as the other tests expect it.
        demo_sim.guest_write_file(str(vm.engine_id), "vg_db01-root", path, before, mtime=guest_files.MTIME)
