"""What a disk holds, found and said in words: partition tables (MBR and GPT), guest LVM, each
filesystem opened read-only or why it cannot be (encrypted, swap, unknown, damaged). Raw disk images
made with the real tools; the sessions over real backups are in test_files.py."""

import subprocess
from pathlib import Path

import pytest

from recovery.files import disks
from recovery.files.tree import MountedTree

MiB = 1024**2


def make_disk(path: Path, label: str, parts: list[tuple[int, int, str]]) -> None:
    """A 64 MiB disk image with a partition table of `parts`: (start MiB, size MiB, type)."""
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
    script = f"label: {label}\n" + "".join(f"{start * 2048},{size * 2048},{kind}\n" for start, size, kind in parts)
    subprocess.run(["sfdisk", "-q", str(path)], input=script.encode(), check=True, capture_output=True)


def put(disk: Path, offset_mib: int, data: bytes) -> None:
    with open(disk, "r+b") as f:
        f.seek(offset_mib * MiB)
        f.write(data)


def ext4(tmp_path: Path, size_mib: int, *, label: str, files: dict[str, bytes]) -> bytes:
    root = tmp_path / f"root-{label}"
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    image = tmp_path / f"{label}.img"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(root), str(image), f"{size_mib}M"],
        check=True,
        capture_output=True,
    )
    return image.read_bytes()


@pytest.fixture
def workdir(tmp_path):
    work = tmp_path / "session"
    work.mkdir()
    yield work
    disks.close_workdir(work)
    assert not work.exists()


def test_it_says_why_each_volume_cannot_be_opened(tmp_path, workdir):
    disk = tmp_path / "disk.raw"
    windows = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"  # Microsoft basic data
    make_disk(disk, "gpt", [(1, 8, "L"), (9, 8, "L"), (17, 8, "S"), (25, 8, "L"), (33, 8, windows), (41, 8, "L")])
    put(disk, 1, b"LUKS\xba\xbe\x00\x02")  # a LUKS2 header's start: what blkid recognizes
    mkswap = tmp_path / "swap.img"
    with open(mkswap, "wb") as f:
        f.truncate(8 * MiB)
    subprocess.run(["mkswap", str(mkswap)], check=True, capture_output=True)
    put(disk, 17, mkswap.read_bytes())
    damaged = bytearray(ext4(tmp_path, 8, label="damaged", files={"a.txt": b"a"}))
    damaged[1024 + 24 : 1024 + 28] = (20).to_bytes(4, "little")  # a block size of 1 GiB: nonsense
    put(disk, 25, bytes(damaged))
    put(disk, 33, b"\xeb\x52\x90-FVE-FS-")  # a BitLocker volume's boot sector
    put(disk, 41, ext4(tmp_path, 8, label="good", files={"etc/motd": b"hello\n"}))

    found, problem = disks.find_filesystems(workdir, disk, 64 * MiB)
    assert problem == ""
    by_key = {fs["key"]: fs for fs in found}
    assert set(by_key) == {"p1", "p2", "p3", "p4", "p5", "p6"}
    assert by_key["p1"]["problem"].startswith("is encrypted (LUKS): its files cannot be read without the key.")
    assert by_key["p2"]["problem"] == "holds no filesystem this product recognizes (unknown or damaged)."
    assert by_key["p3"]["problem"] == "is swap space: it holds no files."
    assert by_key["p5"]["problem"].startswith("is encrypted (BitLocker)")
    assert by_key["p4"]["type"] == "ext4" and not by_key["p4"].get("problem")
    opened = disks.mount(workdir, disk, 0, by_key["p4"])
    assert opened["problem"].startswith("cannot be opened, it may be damaged: fuse2fs failed:"), opened
    good = disks.mount(workdir, disk, 0, by_key["p6"])
    assert (Path(good["mount"]) / "etc" / "motd").read_bytes() == b"hello\n"
    assert MountedTree(Path(good["mount"])).stat(["etc", "motd"]).size == 6


def test_it_says_what_a_disk_without_a_partition_table_or_filesystem_holds(tmp_path, workdir):
    disk = tmp_path / "data.raw"
    disk.write_bytes(b"\x11" * MiB)
    assert disks.find_filesystems(workdir, disk, MiB) == (
        [],
        "holds no partition table and no filesystem on the whole disk that this product recognizes",
    )
    make_disk(disk, "gpt", [])
    assert disks.find_filesystems(workdir, disk, 64 * MiB)[1].startswith(
        "holds a gpt partition table with no partitions"
    )


def test_it_reads_a_guest_lvm_logical_volume_where_its_extents_lie(tmp_path, workdir):
    """The guest's VG on partition 2 of a GPT disk, made with the LVM tools over a loop device (as
    an installer would), its LV holding ext4: found as VG-LV, opened at its extents' offset."""
    disk = tmp_path / "disk.raw"
    make_disk(disk, "gpt", [(1, 8, "L"), (9, 40, "E6D6D379-F507-44C2-A23C-238F2A3DF928")])
    loop = subprocess.run(
        ["losetup", "-f", "--show", "--offset", str(9 * MiB), "--sizelimit", str(40 * MiB), str(disk)],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    try:
        env = disks.lvm_env(tmp_path, loop) | {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        for command in (["pvcreate", "-q", loop], ["vgcreate", "-q", "vg_guest", loop]):
            subprocess.run(command, check=True, capture_output=True, env=env)
        subprocess.run(
            ["lvcreate", "-q", "-an", "-Zn", "-L", "8M", "-n", "pad", "vg_guest"],
            check=True,
            capture_output=True,
            env=env,
        )
        subprocess.run(
            ["lvcreate", "-q", "-an", "-Zn", "-L", "16M", "-n", "root", "vg_guest"],
            check=True,
            capture_output=True,
            env=env,
        )
    finally:
        subprocess.run(["losetup", "-d", loop], check=True)
    found, _ = disks.find_filesystems(workdir, disk, 64 * MiB)
    root = next(fs for fs in found if fs["key"] == "vg_guest-root")
    assert root["where"] == "logical volume root of volume group vg_guest (partition 2)"
    # The LV's place: after the PV's first extent offset and the 8 MiB of "pad".
    with open(disk, "r+b") as f:
        f.seek(root["offset"])
        f.write(ext4(tmp_path, 16, label="lvroot", files={"etc/hostname": b"guest\n"}))
    found, _ = disks.find_filesystems(workdir, disk, 64 * MiB)
    root = next(fs for fs in found if fs["key"] == "vg_guest-root")
    assert (root["type"], root["label"]) == ("ext4", "lvroot")
    opened = disks.mount(workdir, disk, 0, root)
    assert (Path(opened["mount"]) / "etc" / "hostname").read_bytes() == b"guest\n"


def test_it_stops_only_its_own_programs_when_it_closes(tmp_path, workdir):
    """Closing stops the session's daemon and drivers; an operator's `tail -f` of a file in the session
    directory, or a program of another directory whose name starts the same, is left alone."""
    (workdir / "qsd.pid").write_text("1\n")
    (tmp_path / "session-other").mkdir()
    (tmp_path / "session-other" / "log").write_text("")
    bystanders = [
        subprocess.Popen(["tail", "-f", str(workdir / "qsd.pid")], stdout=subprocess.DEVNULL),
        subprocess.Popen(["tail", "-f", str(tmp_path / "session-other" / "log")], stdout=subprocess.DEVNULL),
    ]
    try:
        disk = tmp_path / "disk.raw"
        make_disk(disk, "gpt", [(1, 8, "L")])
        put(disk, 1, ext4(tmp_path, 8, label="own", files={"a": b"a"}))
        opened = disks.mount(workdir, disk, 0, disks.find_filesystems(workdir, disk, 64 * MiB)[0][0])
        assert Path(opened["mount"], "a").read_bytes() == b"a"
        assert len(disks.processes_under(workdir)) == 1  # fuse2fs, not the bystanders
        disks.close_workdir(workdir)
        assert [p.poll() for p in bystanders] == [None, None]
    finally:
        for p in bystanders:
            p.kill()
            p.wait()
