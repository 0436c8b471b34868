"""Consolidation: merging a full into the incremental on it, three ways, and what a kill leaves.

    .venv/bin/python bench/consolidate.py [--size-mib 1024] [--data-mib 256] [--changed-mib 64]

For `qemu-img convert` of the chain into a new file (what repository/consolidate.py does),
`qemu-img rebase -b ""` (copies the backing data into the incremental, in place) and
`qemu-img commit` (writes the incremental into the full, in place), prints the seconds, the bytes
written, and what a SIGKILL half-way leaves: whether the images the manifests name still match
their checksums. Needs no database.
"""

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import checks

MiB = 1024**2


def qemu_io(path: Path, *commands: str) -> None:
    args = ["qemu-io", "-f", "qcow2"]
    for command in commands:
        args += ["-c", command]
    subprocess.run([*args, str(path)], check=True, capture_output=True)


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def make_chain(work: Path, size: int, data: int, changed: int) -> tuple[Path, Path]:
    (work / "full").mkdir()
    (work / "inc").mkdir()
    full, inc = work / "full" / "d.qcow2", work / "inc" / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(full), str(size)], check=True)
    qemu_io(full, *[f"write -P {1 + i % 200} {i * MiB} 1M" for i in range(data // MiB)])
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "../full/d.qcow2", "-F", "qcow2", str(inc)], check=True
    )
    qemu_io(inc, *[f"write -P 250 {i * 2 * MiB} 1M" for i in range(changed // MiB)])
    for image, holds in ((full, data), (inc, changed)):
        checks.at_least(
            f"the bytes allocated to {image}",
            checks.source_image(image, fmt="qcow2", virtual_size=size),
            "the data written",
            holds,
        )
    return full, inc


# Where each way leaves the merged image, and which of the existing images it rewrites.
RESULT = {
    "convert into a new file": (lambda full, inc: Path(str(inc) + ".new"), []),
    "rebase in place": (lambda full, inc: inc, ["inc"]),
    "commit into the full": (lambda full, inc: full, ["full"]),
}


WAYS = {
    "convert into a new file": lambda full, inc: ["qemu-img", "convert", "-O", "qcow2", str(inc), str(inc) + ".new"],
    "rebase in place": lambda full, inc: ["qemu-img", "rebase", "-f", "qcow2", "-b", "", str(inc)],
    "commit into the full": lambda full, inc: ["qemu-img", "commit", "-f", "qcow2", "-d", str(inc)],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=256)
    parser.add_argument("--changed-mib", type=int, default=64)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-consolidate-"))
    times = {}
    try:
        for name, command in WAYS.items():
            work = root / name.replace(" ", "-")
            work.mkdir()
            full, inc = make_chain(work, args.size_mib * MiB, args.data_mib * MiB, args.changed_mib * MiB)
            before = {p: digest(p) for p in (full, inc)}
            reference = root / "reference"  # the chain as it was, to hold the merged image to
            shutil.copytree(work, reference)
            started = time.perf_counter()
            subprocess.run(command(full, inc), check=True, capture_output=True)
            seconds = checks.positive(f"the time to {name}", time.perf_counter() - started)
            times[name] = seconds
            changed = [p.parent.name for p in (full, inc) if digest(p) != before[p]]
            result, rewrites = RESULT[name]
            checks.same_image(
                f"{name}: the merged image against the chain", reference / "inc" / "d.qcow2", result(full, inc)
            )
            checks.equal(f"{name}: the existing images it changed", changed, rewrites)
            shutil.rmtree(reference)

            shutil.rmtree(work)
            work.mkdir()
            full, inc = make_chain(work, args.size_mib * MiB, args.data_mib * MiB, args.changed_mib * MiB)
            before = {p: digest(p) for p in (full, inc)}
            child = subprocess.Popen(command(full, inc), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(seconds / 2)
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            broken = [p.parent.name for p in (full, inc) if digest(p) != before[p]]
            print(
                f"{name}: {seconds:.2f}s; existing images changed: {', '.join(changed) or 'none'}; "
                f"killed half-way, images no longer matching their checksums: {', '.join(broken) or 'none'}"
            )
            shutil.rmtree(work)
        for name in list(WAYS)[1:]:
            checks.ratio(
                "consolidate", f"{name} / convert into a new file (seconds)", times[name], times[list(WAYS)[0]]
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
