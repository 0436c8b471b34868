"""Shared by the tests of file-level restore's pages, API and command: a real backup of app01 (its
first disk holds an ext4 filesystem labelled app01 with /etc/hostname and /data/file0-3.bin, as
ovirtsim's demo seed writes it), browsing sessions under the test's own directory, and what a
session may leave on the machine."""

import json
import subprocess
from pathlib import Path

from core.models import AuditEvent
from recovery.models import FileSession

DISK = "app01_disk1"
HOSTNAME = b"app01\n"
DATA = {f"file{n}.bin": bytes([n + 1]) * (256 * 1024) for n in range(4)}


def ext4_key(session: FileSession) -> str:
    """The key of app01's root filesystem, found by type and label (not by its place on the disk)."""
    session.refresh_from_db()
    (fs,) = [f for f in session.disk(DISK)["filesystems"] if f["type"] == "ext4" and f["label"] == "app01"]
    return fs["key"]


def left_under(root: Path) -> list[str]:
    """Mounts and loop devices under `root` (what a closed session must not leave)."""
    prefix = str(root) + "/"
    found = [
        f"mount {line.split()[4]}"
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4].startswith(prefix)
    ]
    loops = subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True, check=True).stdout
    found += [
        f"loop {d['name']}"
        for d in json.loads(loops or "{}").get("loopdevices", [])
        if (d.get("back-file") or "").startswith(prefix)
    ]
    return found


def nothing_left(root: Path) -> bool:
    """No mount, loop device or session directory under FILES_DIR."""
    return left_under(root) == [] and (not root.exists() or list(root.iterdir()) == [])


def audited(**filters) -> list[tuple[str, dict]]:
    return [
        (e.action, e.details) for e in AuditEvent.objects.filter(action__startswith="files_", **filters).order_by("pk")
    ]
