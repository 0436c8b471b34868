"""The LVM filter of a node that runs inside a proxy VM: disks of other VMs are attached to it, and a
guest's physical volumes on them must stay invisible to the node's own LVM (else it activates the
guest's volume groups, holds the disks open and they cannot be detached; Storware asks for the same
filter on its proxies).

A node reads its LVM configuration where it runs (`lvmconfig`, which honours LVM_SYSTEM_DIR) and
records it; whether it hides an attached disk is judged as LVM's regex filter judges a device: each of
its names against the patterns in order, the first pattern that matches a name deciding for that name;
the device is used if a name is accepted, or if no pattern matches any name."""

import os
import re
import subprocess
from pathlib import Path

# The names a disk attached to the proxy as its next device has in its guest (a partition of it too):
# the kernel's, the by-id link by its serial, the by-path one.
ATTACHED_NAMES = {
    "virtio": [
        ["/dev/vdq", "/dev/disk/by-id/virtio-0123456789abcdef0123", "/dev/disk/by-path/virtio-pci-0000:00:10.0"],
        ["/dev/vdq1", "/dev/disk/by-id/virtio-0123456789abcdef0123-part1"],
    ],
    "virtio_scsi": [
        [
            "/dev/sdq",
            "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_0123456789abcdef0123",
            "/dev/disk/by-path/pci-0000:00:05.0-scsi-0:0:0:16",
        ],
        ["/dev/sdq1", "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_0123456789abcdef0123-part1"],
    ],
}
FIX = (
    'In /etc/lvm/lvm.conf on the node, set devices { global_filter = [ "r|^/dev/disk/by-id/virtio-.*|", '
    '"r|^/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_.*|", "r|^/dev/[sv]d[b-z].*|" ] } (or a filter accepting only '
    'the node\'s own disks, e.g. [ "a|^/dev/vda2$|", "r|.*|" ]), or use an LVM devices file listing them.'
)


def read_lvm_config() -> str:
    """The node's LVM device settings as `lvmconfig --type full` prints them, or why they could not
    be read (in parentheses)."""
    try:
        result = subprocess.run(
            [
                "lvmconfig",
                "--type",
                "full",
                "devices/filter",
                "devices/global_filter",
                "devices/use_devicesfile",
                "devices/devicesfile",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            env=_lvm_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"(lvmconfig could not run: {e})"
    if result.returncode != 0:
        lines = [line.strip() for line in result.stderr.splitlines() if "leaked on" not in line]
        return f"(lvmconfig failed: {' '.join(lines) or f'exit status {result.returncode}'})"
    # Whether the devices file exists: without it, use_devicesfile=1 restricts nothing.
    name = _settings(result.stdout).get("devicesfile", "").strip('"')
    directory = Path(os.environ.get("LVM_SYSTEM_DIR") or "/etc/lvm") / "devices"
    exists = bool(name) and (directory / name).is_file()
    return f"{result.stdout.rstrip()}\ndevicesfile_exists={int(exists)}\n"


def _lvm_env() -> dict:
    return {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}


def _settings(config: str) -> dict[str, str]:
    return dict(line.strip().split("=", 1) for line in config.splitlines() if "=" in line)


def _patterns(value: str) -> list[tuple[bool, re.Pattern]]:
    """An LVM filter list (["a|...|", "r|...|"]) as (accept, regex) pairs; the character after a or r
    delimits the regex."""
    found = []
    for item in re.findall(r'"((?:[^"\\]|\\.)*)"', value or ""):
        if len(item) < 3 or item[0] not in "ar":
            continue
        delimiter = item[1]
        body = item[2 : item.rindex(delimiter)] if item.rindex(delimiter) > 1 else item[2:]
        try:
            found.append((item[0] == "a", re.compile(body)))
        except re.error:
            continue
    return found


def _used(patterns: list[tuple[bool, re.Pattern]], names: list[str]) -> bool:
    """Whether LVM's regex filter lets a device with these names through."""
    rejected = False
    for name in names:
        for accept, regex in patterns:
            if regex.search(name):
                if accept:
                    return True
                rejected = True
                break
    return not rejected


def lvm_filter_problem(config: str, interface: str = "virtio_scsi") -> str:
    """What is wrong with the node's LVM configuration (as read_lvm_config returned it) for a proxy
    attaching disks by `interface`, with the fix; "" when attached disks stay hidden from its LVM."""
    if not config:
        return "The node has not reported its LVM filter (it reports it when its worker starts). " + FIX
    if config.startswith("("):
        return f"The node's LVM filter could not be read {config}. " + FIX
    settings = _settings(config)
    if settings.get("use_devicesfile") == "1" and settings.get("devicesfile_exists") == "1":
        return ""  # LVM uses only the devices its devices file lists
    filters = [_patterns(settings.get("global_filter", "")), _patterns(settings.get("filter", ""))]
    seen = [names for names in ATTACHED_NAMES[interface] if all(_used(patterns, names) for patterns in filters)]
    if not seen:
        return ""
    return (
        f"The node's LVM filter lets it see disks attached to the proxy (such as {seen[0][0]}, "
        f"{seen[0][1]}): their guests' volume groups would be activated on the node. " + FIX
    )
