"""A volume chain copied off a host, merged here into one QCOW2.

The volumes of a disk are copied as they are on the host (a QCOW2 layer as its file, a RAW base
through qemu-nbd into a QCOW2), each into its own file; their backing links name the host's paths,
so each is pointed at the copy below it (`qemu-img rebase -u`: no data read), the lowest at the
previous point's image for an incremental, then the layers are committed into the lowest, which
becomes the point's file. Used by the SSH transfer; a strategy that copies an exported chain (the
export domain's images) can merge it the same way.
"""

import json
import subprocess
from pathlib import Path

from jobs.errors import JobError


def merge_layers(files: list[Path], backing: str | None) -> Path:
    """Point each copied layer (base first) at the one copied below it (the lowest at `backing`, the
    previous point's image, when given), then merge them all into the lowest, which is returned;
    the others are removed. JobError in words when qemu-img refuses."""
    for n, path in enumerate(files):
        below = backing if n == 0 else files[n - 1].name
        if below is not None:
            qemu_img("rebase", "-q", "-u", "-f", "qcow2", "-b", below, "-F", "qcow2", str(path))
    if len(files) > 1:
        qemu_img("commit", "-q", "-f", "qcow2", "-b", str(files[0]), str(files[-1]))
        for path in files[1:]:
            path.unlink()
    return files[0]


def qemu_img(*args: str) -> str:
    """`qemu-img ARGS` on the copied volumes; its stdout, or JobError with its complaint."""
    result = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise JobError(f"qemu-img {args[0]} failed on the copied volumes: {result.stderr.strip()}")
    return result.stdout


def image_info(path: Path) -> dict:
    """`qemu-img info` of a copied volume, as JSON."""
    return json.loads(qemu_img("info", "--output=json", str(path)))
