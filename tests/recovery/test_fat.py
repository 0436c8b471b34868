"""The FAT reader of file-level restore against images made by the real tools: mkfs.vfat makes the
filesystem and mtools writes into it (`mcopy -m` keeps the mtimes), no kernel driver involved."""

import json
import os
import re
import struct
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recovery.files.fat import FatError, FatVolume

MiB = 1024**2
# mtools writes local time into FAT, as FAT wants; in UTC it is the time the reader gives back.
TOOLS_ENV = {**os.environ, "TZ": "UTC", "MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"}
# FAT12 and FAT16 want a cluster count in their range: small images, one sector a cluster for FAT16/32.
MKFS = {12: (4 * MiB, []), 16: (8 * MiB, ["-s", "1"]), 32: (40 * MiB, ["-s", "1"])}


def tool(*args: str) -> str:
    done = subprocess.run(args, env=TOOLS_ENV, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    return done.stdout


def make_fat(path: Path, bits: int, *, label: str = "TESTVOL", size: int = 0, options=()) -> Path:
    default_size, default_options = MKFS[bits]
    with open(path, "wb") as image:
        image.truncate(size or default_size)
    tool("mkfs.vfat", "-F", str(bits), *(options or default_options), "-n", label, str(path))
    return path


def mcopy(image: Path | str, *sources: Path, to: str = "::/") -> None:
    tool("mcopy", "-s", "-m", "-i", str(image), *map(str, sources), to)


def at(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def make_tree(root: Path) -> Path:
    """Names of every kind FAT stores: 8.3 in upper and lower case (mtools writes the latter with the
    NT case flags, no long name), long, non-ASCII, nested; each file with its own month."""
    files = {
        "readme.txt": b"lower-case 8.3 name\n",
        "README2.TXT": b"upper-case 8.3 name\n",
        "notes.TXT": b"lower base, upper extension\n",
        "Mixed Case Long Name.txt": b"long name\n",
        "été — résumé.txt": "accents: été\n".encode(),
        "日本語のファイル名.txt": "日本語\n".encode(),
        "a name longer than twenty-six characters, so three slots or more.bin": os.urandom(5000),
        "empty.txt": b"",
        "docs/sub dir/deeper/note.md": b"# deep\n",
        "docs/UPPER/FILE.TXT": os.urandom(3 * 4096 + 17),
    }
    for n, (name, content) in enumerate(files.items()):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        # Odd seconds (FAT keeps 2 s steps) and every month: fusefat shows each a month off.
        os.utime(path, (0, at(2001 + n, 1 + n, 1 + 2 * n, 2 * n, 3 * n, 2 * n + 1)))
    for n, folder in enumerate(sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True)):
        os.utime(folder, (0, at(2019, 12 - n, 28, 23, 59, 58)))
    return root


def assert_same_tree(volume: FatVolume, source: Path, inside: str = "/") -> None:
    for folder, dirs, files in os.walk(source):
        path = inside + os.path.relpath(folder, source).removeprefix(".").lstrip("/")
        listed = {entry.name: entry for entry in volume.entries(path)}
        assert sorted(listed) == sorted(dirs + files), path
        for name in dirs:
            assert listed[name].kind == "dir" and listed[name].mode == 0o755
            assert abs(listed[name].mtime - os.stat(Path(folder, name)).st_mtime) <= 2, f"{path}/{name}"
        for name in files:
            entry, original = listed[name], Path(folder, name)
            assert (entry.kind, entry.size, entry.mode, entry.uid, entry.gid, entry.target) == (
                "file",
                original.stat().st_size,
                0o644,
                None,
                None,
                "",
            ), f"{path}/{name}"
            assert abs(entry.mtime - original.stat().st_mtime) <= 2, f"{path}/{name}"
            with volume.open(f"{path.rstrip('/')}/{name}") as opened:
                assert opened.read() == original.read_bytes(), f"{path}/{name}"


def mtools_free_bytes(image: Path) -> int:
    last = tool("mdir", "-i", str(image), "::/").strip().splitlines()[-1]
    assert "bytes free" in last, last
    return int(re.sub(r"\D", "", last))


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_it_reads_what_mtools_wrote(tmp_path, bits):
    source = make_tree(tmp_path / "source")
    image = make_fat(tmp_path / "fat.img", bits, label="BACKUP 25")
    mcopy(image, *source.iterdir())
    tool("mattrib", "-i", str(image), "+r", "::/README2.TXT")
    tool("mattrib", "-i", str(image), "+r", "::/docs/UPPER")

    with FatVolume(image) as volume:
        assert (volume.fat_type, volume.label) == (f"FAT{bits}", "BACKUP 25")
        assert volume.free_bytes == mtools_free_bytes(image)
        assert volume.free_bytes < volume.total_bytes <= os.path.getsize(image)
        assert volume.stat("/README2.TXT").mode == 0o444
        assert volume.stat("/docs/UPPER").mode == 0o555
    tool("mattrib", "-i", str(image), "-r", "::/README2.TXT")  # compared as the others below
    tool("mattrib", "-i", str(image), "-r", "::/docs/UPPER")
    with FatVolume(image) as volume:
        assert_same_tree(volume, source)
        # The volume label is the volume's name, not a file of its root.
        assert "BACKUP 25" not in [entry.name for entry in volume.entries("/")]
        # As FAT itself, names match in any case; each entry keeps its own.
        assert volume.stat("/DOCS/Sub Dir/DEEPER/NOTE.MD").name == "note.md"
        assert volume.stat("/ÉTÉ — RÉSUMÉ.TXT").name == "été — résumé.txt"
        assert volume.stat("//docs//UPPER/").kind == "dir"


def test_it_counts_the_free_space_itself(tmp_path):
    """FAT32 keeps a free-cluster count in its FSInfo sector, a hint that other systems leave stale."""
    image = make_fat(tmp_path / "fat.img", 32)
    content = tmp_path / "content.bin"
    content.write_bytes(os.urandom(MiB))
    mcopy(image, content)
    free = mtools_free_bytes(image)
    boot = image.read_bytes()[:512]
    (fsinfo,) = struct.unpack_from("<H", boot, 48)
    with open(image, "r+b") as stale:
        stale.seek(fsinfo * 512 + 488)
        assert struct.unpack("<I", stale.read(4))[0] * 512 == free
        stale.seek(fsinfo * 512 + 488)
        stale.write(struct.pack("<I", 12345))

    with FatVolume(image) as volume:
        assert volume.free_bytes == free
        assert volume.total_bytes - free == MiB + 512  # the file and the root directory's cluster


def test_it_reads_a_file_whose_clusters_are_scattered(tmp_path):
    """mtools allocates the first free clusters: deleting every other small file leaves holes that
    the large file written next fills, one by one, before running on after them."""
    image = make_fat(tmp_path / "fat.img", 16)
    small = tmp_path / "small"
    small.mkdir()
    for n in range(40):
        (small / f"s{n:02}.bin").write_bytes(os.urandom(1024))
    mcopy(image, *sorted(small.iterdir()))
    tool("mdel", "-i", str(image), *(f"::/s{n:02}.bin" for n in range(0, 40, 2)))
    large = tmp_path / "large.bin"
    large.write_bytes(os.urandom(100_000))
    mcopy(image, large)
    clusters = tool("mshowfat", "-i", str(image), "::/large.bin")
    assert clusters.count("<") == 21, clusters  # the 20 holes, then the rest in one run

    with FatVolume(image) as volume, volume.open("/large.bin") as opened:
        assert sorted(entry.name for entry in volume.entries("/")) == [
            "large.bin",
            *(f"s{n:02}.bin" for n in range(1, 40, 2)),
        ]  # the deleted ones are gone
        assert opened.read() == large.read_bytes()
        # Reads across the holes, at any place, and never past the file's end.
        content = large.read_bytes()
        for where, length in ((1000, 100), (1023, 2), (50_000, 30_000), (99_990, 100), (100_000, 10)):
            opened.seek(where)
            assert opened.read(length) == content[where : where + length]
            assert opened.tell() == min(where + length, len(content))
        opened.seek(-10, os.SEEK_END)
        buffer = bytearray(64)
        assert opened.readinto(buffer) == 10 and bytes(buffer[:10]) == content[-10:]


def replace_once(image: Path, old: bytes, new: bytes) -> None:
    content = image.read_bytes()
    assert content.count(old) == 1, old
    image.write_bytes(content.replace(old, new))


def test_it_takes_the_8_3_name_when_the_long_name_is_not_its_own(tmp_path):
    """A tool that knows no long names renamed the 8.3 entry: the long-name slots before it carry
    the checksum of the old 8.3 name, so they are not this file's name any more."""
    source = make_tree(tmp_path / "source")
    image = make_fat(tmp_path / "fat.img", 16)
    mcopy(image, source / "Mixed Case Long Name.txt", source / "readme.txt")
    replace_once(image, b"MIXEDC~1TXT", b"MIXEDC~2TXT")

    with FatVolume(image) as volume:
        assert [entry.name for entry in volume.entries("/")] == ["MIXEDC~2.TXT", "readme.txt"]
        with volume.open("/mixedc~2.txt") as opened:
            assert opened.read() == b"long name\n"


def test_it_reads_a_filesystem_inside_a_partitioned_disk(tmp_path):
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as image:
        image.truncate(24 * MiB)
    subprocess.run(["sfdisk", "-q", str(disk)], input="label: dos\nstart=2048, type=c\n", text=True, check=True)
    (partition,) = json.loads(tool("sfdisk", "--json", str(disk)))["partitiontable"]["partitions"]
    offset, size = partition["start"] * 512, partition["size"] * 512
    tool("mkfs.vfat", "-F", "16", "-n", "EFI", f"--offset={partition['start']}", str(disk), str(size // 1024))
    source = make_tree(tmp_path / "source")
    mcopy(f"{disk}@@{offset}", *source.iterdir())

    with FatVolume(disk, offset=offset, size=size) as volume:
        assert (volume.fat_type, volume.label) == ("FAT16", "EFI")
        assert_same_tree(volume, source)
    with pytest.raises(FatError, match=r"disk.img: not a FAT filesystem"):
        FatVolume(disk)  # the MBR is no FAT boot sector
    with pytest.raises(FatError, match=r"at byte 1048576: truncated: the filesystem is \d+ bytes, only 1048576"):
        FatVolume(disk, offset=offset, size=MiB)


@pytest.mark.slow
def test_it_lists_a_directory_of_ten_thousand_files(tmp_path):
    # 8.3 names keep mcopy quick (it checks every name against all the others); FAT allows
    # 65,536 entries in a directory, so 100,000 can only be an extrapolation.
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(10_000):
        (folder / f"f{n:05}.txt").write_bytes(b"")
    image = make_fat(tmp_path / "fat.img", 32, size=64 * MiB)
    mcopy(image, folder)

    with FatVolume(image) as volume:
        started, cpu = time.perf_counter(), time.process_time()
        entries = volume.entries("/many")
        took, cpu = time.perf_counter() - started, time.process_time() - cpu
    # The CPU time too: on a busy machine the wall time is mostly waiting for a core.
    print(f"listed {len(entries)} entries in {took * 1000:.0f} ms, {cpu * 1000:.0f} ms of CPU (x10: {took * 10:.2f} s)")
    assert sorted(entry.name for entry in entries) == sorted(os.listdir(folder))


def test_it_reads_a_large_file_at_the_speed_of_a_plain_one(tmp_path):
    # 4 KiB clusters as on a real volume; mtools takes FAT32 for FAT32 from 65,525 clusters on.
    image = make_fat(tmp_path / "fat.img", 32, size=300 * MiB, options=["-s", "8"])
    large = tmp_path / "large.bin"
    large.write_bytes(os.urandom(64 * MiB))
    mcopy(image, large)
    buffer = bytearray(MiB)

    def read_all(opened) -> bytes:
        parts = []
        while n := opened.readinto(buffer):
            parts.append(bytes(buffer[:n]))
        return b"".join(parts)

    with FatVolume(image) as volume, volume.open("/large.bin") as opened:
        started = time.perf_counter()
        content = read_all(opened)
        ours = time.perf_counter() - started
    with open(large, "rb", buffering=0) as plain:
        started = time.perf_counter()
        read_all(plain)
        theirs = time.perf_counter() - started
    print(f"64 MiB read at {64 / ours:.0f} MiB/s from FAT, at {64 / theirs:.0f} MiB/s from a plain file")
    assert content == large.read_bytes()


def test_it_refuses_a_path_it_cannot_follow(tmp_path):
    source = make_tree(tmp_path / "source")
    image = make_fat(tmp_path / "fat.img", 12)
    mcopy(image, *source.iterdir())

    with FatVolume(image) as volume:
        with pytest.raises(FileNotFoundError, match="/docs/nothing"):
            volume.entries("/docs/nothing")
        with pytest.raises(FileNotFoundError, match="/nothing.txt"):
            volume.open("/nothing.txt")
        with pytest.raises(IsADirectoryError, match="/docs/UPPER"):
            volume.open("/docs/UPPER")
        with pytest.raises(NotADirectoryError, match="/readme.txt/inside"):
            volume.stat("/readme.txt/inside")
        with pytest.raises(NotADirectoryError, match="/readme.txt"):
            volume.entries("/readme.txt")
        for path in ("/docs/../readme.txt", "/./readme.txt", ".."):
            with pytest.raises(FatError, match="'.' and '..' are not allowed in a path"):
                volume.stat(path)


def fat_geometry(image: Path) -> tuple[int, int, int]:
    """Where the first FAT is, the bytes of an entry of it (FAT16 or FAT32 here), a cluster's bytes."""
    boot = image.read_bytes()[:512]
    bps, spc, reserved = struct.unpack_from("<HBH", boot, 11)
    return reserved * bps, 4 if boot[22:24] == b"\0\0" else 2, bps * spc


def first_cluster(image: Path, path: str) -> int:
    return int(re.search(r"<(\d+)", tool("mshowfat", "-i", str(image), f"::{path}")).group(1))


def set_fat_entry(image: Path, cluster: int, value: int) -> None:
    fat, width, _ = fat_geometry(image)
    with open(image, "r+b") as damaged:
        damaged.seek(fat + cluster * width)
        damaged.write(value.to_bytes(width, "little"))


@pytest.mark.parametrize("bits", [16, 32])
def test_it_refuses_a_damaged_chain(tmp_path, bits):
    image = make_fat(tmp_path / "fat.img", bits)
    content = tmp_path / "five.bin"
    content.write_bytes(os.urandom(5 * 512))
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "inside.txt").write_bytes(b"x")
    mcopy(image, content, folder)
    five, inside = first_cluster(image, "/five.bin"), first_cluster(image, "/folder")

    set_fat_entry(image, five + 3, five + 1)  # the fourth cluster leads back to the second
    set_fat_entry(image, inside, inside)  # the folder's only cluster leads to itself
    with FatVolume(image) as volume:
        with pytest.raises(FatError, match=r"fat.img: /five.bin: its cluster chain loops"):
            volume.open("/five.bin")
        with pytest.raises(FatError, match=r"fat.img: /folder: its cluster chain loops"):
            volume.entries("/folder")

    set_fat_entry(image, five + 1, 0)  # the second cluster free, as if the file ended there
    set_fat_entry(image, inside, 0x0FFFFFF0 if bits == 32 else 0xFFF0)  # a cluster beyond the FAT
    with FatVolume(image) as volume:
        with pytest.raises(FatError, match=r"/five.bin: its cluster chain is broken \(cluster 0x0 is free"):
            volume.open("/five.bin")
        with pytest.raises(FatError, match=r"/folder: its cluster chain is broken \(cluster 0xf+0 is free"):
            volume.entries("/folder")


def test_it_refuses_a_directory_larger_than_fat_allows(tmp_path):
    image = make_fat(tmp_path / "fat.img", 16)
    large = tmp_path / "large.bin"
    large.write_bytes(bytes(3 * MiB))
    mcopy(image, large)
    replace_once(image, b"LARGE   BIN\x20", b"LARGE   BIN\x10")  # archive attribute -> directory of 3 MiB

    with (
        FatVolume(image) as volume,
        pytest.raises(FatError, match=r"fat.img: directory /large.bin is larger than FAT allows \(65,536 entries\)"),
    ):
        volume.entries("/large.bin")


def test_it_refuses_what_is_not_a_whole_fat(tmp_path):
    zeros = tmp_path / "zeros.img"
    zeros.write_bytes(bytes(MiB))
    with pytest.raises(FatError, match=r"zeros.img: not a FAT filesystem \(no FAT boot sector\)"):
        FatVolume(zeros)
    tiny = tmp_path / "tiny.img"
    tiny.write_bytes(b"FAT")
    with pytest.raises(FatError, match=r"tiny.img: not a FAT filesystem \(only 3 bytes\)"):
        FatVolume(tiny)
    ext4 = tmp_path / "ext4.img"
    with open(ext4, "wb") as image:
        image.truncate(8 * MiB)
    tool("mkfs.ext4", "-q", str(ext4))
    with pytest.raises(FatError, match=r"ext4.img: not a FAT filesystem"):
        FatVolume(ext4)

    image = make_fat(tmp_path / "fat.img", 32)
    truncated = tmp_path / "truncated.img"
    truncated.write_bytes(image.read_bytes()[: 20 * MiB])
    with pytest.raises(FatError, match=rf"truncated.img: truncated: the filesystem is {40 * MiB} bytes, only"):
        FatVolume(truncated)
    with pytest.raises(FatError, match=rf"fat.img at byte {MiB}: {40 * MiB} bytes at byte {MiB} are past the image"):
        FatVolume(image, offset=MiB, size=40 * MiB)

    boot = bytearray(image.read_bytes()[:512])
    boot[16] = 0  # no FAT at all
    with open(image, "r+b") as damaged:
        damaged.write(boot)
    with pytest.raises(FatError, match=r"fat.img: bad FAT geometry \(512 bytes a sector, 1 sectors a cluster"):
        FatVolume(image)
