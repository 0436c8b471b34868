"""`qemu-img convert` on this node with its progress told and a cancel obeyed: one loop for every
local conversion of a whole image (a strategy reading an exported volume, a restore writing one)."""

import contextlib
import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path


class ConvertError(Exception):
    """qemu-img failed; the message is its own words."""


def percent_reader(stream, size: int, done: list[int]) -> None:
    """qemu-img's -p output ("    (12.34/100%)\\r") as bytes done."""
    buf = b""
    while chunk := stream.read1(256) if hasattr(stream, "read1") else stream.read(256):
        buf += chunk
        *parts, buf = buf.split(b"\r")
        for part in parts:
            text = part.decode(errors="replace").strip().strip("()").split("/")[0]
            with contextlib.suppress(ValueError):
                done[0] = int(float(text) / 100 * size)


def virtual_size(path: Path, fmt: str) -> int:
    info = subprocess.run(
        ["qemu-img", "info", "-U", "-f", fmt, "--output=json", str(path)], capture_output=True, text=True
    )
    if info.returncode != 0:
        raise ConvertError(info.stderr.strip() or f"qemu-img info failed on {path}")
    return json.loads(info.stdout)["virtual-size"]


def convert(
    source: Path,
    source_format: str,
    target: Path,
    target_format: str,
    *,
    options: list[str] = (),
    progress: Callable[[int], None],
    check: Callable[[], None],
) -> int:
    """The guest-visible content of `source` (its format given, never guessed) into a new `target`
    image; `progress(bytes)` twice a second, `check()` likewise (raising stops and kills the copy).
    Returns the virtual size."""
    size = virtual_size(source, source_format)
    convert = subprocess.Popen(
        ["qemu-img", "convert", "-p", "-f", source_format, "-O", target_format, *options, str(source), str(target)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    done = [0]
    reader = threading.Thread(target=percent_reader, args=(convert.stdout, size, done), daemon=True)
    reader.start()
    try:
        while True:
            try:
                convert.wait(0.5)
                break
            except subprocess.TimeoutExpired:
                progress(done[0])
                check()
    except BaseException:
        convert.kill()
        convert.wait()
        raise
    finally:
        reader.join()
        convert.stdout.close()
    err = convert.stderr.read().decode(errors="replace").strip()
    convert.stderr.close()
    if convert.returncode != 0:
        raise ConvertError(err or f"qemu-img convert exited with status {convert.returncode}")
    progress(size)
    return size
