"""What the demo seed's guest disks hold: partition tables, LVM, filesystems and their files.

The seed builds the disks from this (guest_images.py), and tests compare what they read back from
a backup with it. `DISKS` maps a disk's name to its `Layout`; `filesystems(disk)` gives its
filesystems by key: `disk` (a filesystem on the whole disk), `p1`, `p2`... (partitions, numbered as
in the partition table) and `VG-LV` for a logical volume of the guest's own LVM (`vg_db01-root`).
`files(disk, key)` is the expected content of one filesystem: {path: bytes} of its regular files.

Every entry has its mode, owner and modification time (`MTIME` unless given), as a POSIX filesystem
(ext4, XFS, Btrfs) keeps them; vfat and NTFS keep only the names, contents and times. The
filesystems' own entries (ext4's /lost+found, NTFS's $-files) are not listed.

| disk | layout |
|---|---|
| web01_os | GPT: p1 EFI System (vfat EFI, 8 MiB at 1 MiB), p2 Linux (ext4 web01, the rest) |
| db01_os | MBR: p1 Linux (ext4 boot, 16 MiB, bootable), p2 LVM (VG vg_db01: LV root ext4 db01, LV data XFS dbdata) |
| app01_disk1 | ext4 app01 on the whole disk (no partition table) |
| app01_disk3 | MBR: p1 NTFS (WINDATA, 15 MiB at 1 MiB), p2 Linux (Btrfs appdata, the rest: 16 MiB) |

app01_disk2 holds raw data (a byte pattern): no partition table, no filesystem.
"""

import uuid
from dataclasses import dataclass

MiB = 1024**2
KiB = 1024

# 2026-01-02 03:04:06 UTC: an even second, so FAT's 2-second times hold it exactly.
MTIME = 1767323046


def _uuid(name: str) -> str:
    """A fixed UUID per name, so every seed makes the same identities (filesystem and partition UUIDs)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ovirtsim-demo:{name}"))


@dataclass(frozen=True)
class Entry:
    """A file (`data`), a symlink (`target`) or, with neither, a directory."""

    path: str  # absolute inside the filesystem
    data: bytes | None = None
    target: str | None = None
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME

    @property
    def kind(self) -> str:
        return "file" if self.data is not None else "symlink" if self.target is not None else "dir"


def file(path: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, data=data, mode=mode, uid=uid, gid=gid)


def directory(path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, mode=mode, uid=uid, gid=gid)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, target=target, mode=0o777)


@dataclass(frozen=True)
class Filesystem:
    fstype: str  # ext4, xfs, vfat, ntfs, btrfs
    label: str
    uuid: str  # vfat: its 8-hex-digit volume id; NTFS, Btrfs: none is set (mkfs picks one)
    entries: tuple[Entry, ...]

    def tree(self) -> dict[str, Entry]:
        """Every entry by path, its parent directories included (root-owned, 0755, unless listed), depth
        first (a directory, then what it holds)."""
        found: dict[str, Entry] = {}
        for entry in self.entries:
            parts = entry.path.strip("/").split("/")
            for n in range(1, len(parts)):
                parent = "/" + "/".join(parts[:n])
                found.setdefault(parent, directory(parent))
            found[entry.path] = entry
        return dict(sorted(found.items(), key=lambda item: item[0].split("/")))

    def files(self) -> dict[str, bytes]:
        return {e.path: e.data for e in self.entries if e.data is not None}


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    extents: int
    filesystem: Filesystem


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    extent_size: int
    volumes: tuple[LogicalVolume, ...]


@dataclass(frozen=True)
class Partition:
    start: int  # bytes
    size: int | None  # bytes; None: up to the end of the disk (GPT: its last usable sector)
    type: str  # as sfdisk takes it: a GPT type GUID, or an MBR type in hex
    content: Filesystem | VolumeGroup
    name: str = ""  # GPT partition name
    uuid: str = ""  # GPT partition UUID
    bootable: bool = False  # MBR's active flag


@dataclass(frozen=True)
class Layout:
    table: str | None  # "gpt", "dos", or None for a filesystem on the whole disk
    label_id: str = ""
    partitions: tuple[Partition, ...] = ()
    filesystem: Filesystem | None = None


ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"  # GPT: EFI System
LINUX_FS = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"  # GPT: Linux filesystem

BOOTX64_EFI = b"MZ\x90\x00\x03\x00\x00\x00" + b"ovirtsim demo EFI loader\n" + bytes(range(256))
NGINX_CONF = b"""user www-data;
worker_processes auto;
events { worker_connections 768; }
http {
    server { listen 80; root /var/www; index index.html; }
}
"""
INDEX_HTML = b"<!DOCTYPE html>\n<html><body><h1>web01</h1></body></html>\n"
DATA_FILES = tuple(file(f"/data/file{n}.bin", bytes([n + 1]) * (256 * KiB)) for n in range(4))
GRUB_CFG = b"""set default=0
set timeout=5
menuentry 'Debian GNU/Linux' {
    linux /vmlinuz root=/dev/mapper/vg_db01-root ro quiet
    initrd /initrd.img
}
"""
DATA_SQL = b"""CREATE TABLE orders (id integer PRIMARY KEY, customer text, total numeric);
INSERT INTO orders VALUES (1, 'Alice', 42.50);
INSERT INTO orders VALUES (2, 'Bob', 17.00);
"""
REPORT_TXT = b"Quarterly report\r\nRevenue: 1,234,567 EUR\r\nStatus: on track\r\n"

WEB01_ROOT = Filesystem(
    "ext4",
    "web01",
    _uuid("web01_os:p2"),
    (
        file("/etc/hostname", b"web01\n"),
        file("/etc/nginx/nginx.conf", NGINX_CONF),
        # Points out of the filesystem: a browser must not follow it to the host's own file.
        symlink("/etc/escape", "../../../../../etc/shadow"),
        *DATA_FILES,
        directory("/home/alice", mode=0o750, uid=1000, gid=1000),
        file("/home/alice/notes.txt", b"Renew the TLS certificate before March.\n", mode=0o600, uid=1000, gid=1000),
        directory("/home/alice/Documents", uid=1000, gid=1000),
        file("/home/alice/Documents/quarterly report.txt", b"Q4: all green.\n", uid=1000, gid=1000),
        file("/home/alice/Documents/Grüße an Zoë.txt", "Schöne Grüße!\n".encode(), uid=1000, gid=1000),
        directory("/mnt"),  # empty
        file("/srv/www/index.html", INDEX_HTML),
        symlink("/var/www", "/srv/www"),  # absolute: resolved inside the guest, never on the host
    ),
)

DISKS: dict[str, Layout] = {
    "web01_os": Layout(
        "gpt",
        _uuid("web01_os"),
        (
            Partition(
                1 * MiB,
                8 * MiB,
                ESP,
                Filesystem("vfat", "EFI", "0E1F0001", (file("/EFI/BOOT/BOOTX64.EFI", BOOTX64_EFI),)),
                name="EFI System Partition",
                uuid=_uuid("web01_os:p1"),
            ),
            Partition(9 * MiB, None, LINUX_FS, WEB01_ROOT, name="root", uuid=_uuid("web01_os:p2")),
        ),
    ),
    "db01_os": Layout(
        "dos",
        "0xdb010001",
        (
            Partition(
                1 * MiB,
                16 * MiB,
                "83",
                Filesystem("ext4", "boot", _uuid("db01_os:p1"), (file("/grub/grub.cfg", GRUB_CFG),)),
                bootable=True,
            ),
            Partition(
                17 * MiB,
                None,
                "8e",
                VolumeGroup(
                    "vg_db01",
                    4 * MiB,
                    (
                        LogicalVolume(
                            "root",
                            4,
                            Filesystem(
                                "ext4",
                                "db01",
                                _uuid("db01_os:root"),
                                (file("/etc/hostname", b"db01\n"), file("/var/lib/db/data.sql", DATA_SQL)),
                            ),
                        ),
                        LogicalVolume(
                            "data",
                            6,
                            Filesystem(
                                "xfs",
                                "dbdata",
                                _uuid("db01_os:data"),
                                (
                                    directory("/pg", mode=0o700, uid=999, gid=999),
                                    file("/pg/PG_VERSION", b"16\n", mode=0o600, uid=999, gid=999),
                                ),
                            ),
                        ),
                    ),
                ),
            ),
        ),
    ),
    "app01_disk1": Layout(
        None,
        filesystem=Filesystem("ext4", "app01", _uuid("app01_disk1"), (file("/etc/hostname", b"app01\n"), *DATA_FILES)),
    ),
    "app01_disk3": Layout(
        "dos",
        "0xa9901003",
        (
            Partition(
                1 * MiB,
                15 * MiB,
                "7",
                Filesystem(
                    "ntfs",
                    "WINDATA",
                    "",
                    (
                        file("/Users/Public/Documents/report.txt", REPORT_TXT),
                        file("/Users/Public/Documents/Übersicht für Zoë.txt", "Ça va très bien.\r\n".encode()),
                    ),
                ),
            ),
            Partition(
                16 * MiB,
                None,
                "83",
                Filesystem(
                    "btrfs",
                    "appdata",
                    "",  # mkfs.btrfs picks it: it refuses a UUID the kernel knows (guest_images)
                    (
                        file("/projects/README.md", b"# Projects\n\nThe app's working tree.\n"),
                        file("/projects/app/config.yaml", b"listen: 0.0.0.0:8080\nworkers: 4\n", mode=0o640),
                    ),
                ),
            ),
        ),
    ),
}


def filesystems(disk: str) -> dict[str, Filesystem]:
    """The filesystems of a demo disk by key: `disk`, `pN`, or `VG-LV` (see the module docstring)."""
    layout = DISKS[disk]
    if layout.filesystem is not None:
        return {"disk": layout.filesystem}
    found = {}
    for n, part in enumerate(layout.partitions, start=1):
        if isinstance(part.content, VolumeGroup):
            for lv in part.content.volumes:
                found[f"{part.content.name}-{lv.name}"] = lv.filesystem
        else:
            found[f"p{n}"] = part.content
    return found


def files(disk: str, key: str) -> dict[str, bytes]:
    """The regular files of one filesystem of a demo disk: {path: content}."""
    return filesystems(disk)[key].files()
