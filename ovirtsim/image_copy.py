"""Copying a disk's volumes to another storage domain, as vdsm's copyImage does.

Two ways, as the engine asks for them (CopyImageGroup's `useCopyCollapse`):

- collapsed: one new volume holding the guest-visible content of a chain up to a volume
  (`qemu-img convert` of the chain's top; qemu reads the layers below it);
- volume by volume: each volume keeps its id, and a layer gets only its own clusters on a
  backing reference to its copied parent (`qemu-img convert -B PARENT`, vdsm's
  `_interImagesCopy`), so the copy is the same chain.

A source or target is a list of qemu-img arguments (`source_args`/`target_args`): a path with
its format, or a `json:` spec for a RAW volume on an LV, which is longer than the disk (its size
is the disk's, as vdsm limits it).
"""

import json
import os
from pathlib import Path

from ovirtsim import qemu

QCOW2_OPTIONS = "compat=1.1,lazy_refcounts=on"


def _qemu_format(fmt: str) -> str:
    return "qcow2" if fmt == "cow" else "raw"


def source_args(path: Path, fmt: str, *, size: int | None = None) -> list[str]:
    """How qemu-img reads a volume (with its backing chain): `size` limits a RAW LV to the disk."""
    if fmt == "cow" or size is None:
        return ["-f", _qemu_format(fmt), str(path)]
    return ["json:" + json.dumps({"driver": "raw", "size": size, "file": qemu.protocol(path)})]


def copy_volume(
    source: list[str],
    dest: Path,
    *,
    fmt: str,
    preallocate: bool = False,
    parent: Path | None = None,
    parent_fmt: str | None = None,
    existing: bool = False,
    size: int | None = None,
) -> None:
    """Write `source` (a chain's guest-visible content) into volume `dest` of format `fmt` (cow/raw).

    With `parent` (the copied parent volume, referenced relatively as vdsm writes it), only the
    clusters of the source's own layer are copied. `existing`: `dest` was made already (an LV
    the engine created, with its QCOW2 header): it is written in place (`-n`); `size` limits a
    RAW LV to the disk's size.
    """
    out_fmt = _qemu_format(fmt)
    args = ["qemu-img", "convert", "-q", "-W", *source]
    if existing:
        args.append("-n")
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        options = QCOW2_OPTIONS if out_fmt == "qcow2" else ""
        if preallocate:
            extra = "preallocation=metadata" if out_fmt == "qcow2" else "preallocation=falloc"
            options = f"{options},{extra}" if options else extra
        if options:
            args += ["-o", options]
    if parent is not None:
        args += ["-B", os.path.relpath(parent, dest.parent), "-F", _qemu_format(parent_fmt or "cow")]
    if existing and out_fmt == "raw" and size is not None:
        spec = {"driver": "raw", "size": size, "file": qemu.protocol(dest)}
        args += ["--target-image-opts", ",".join(f"{k}={v}" for k, v in _flatten(spec).items())]
    else:
        args += ["-O", out_fmt, str(dest)]
    qemu.run(*args)


def _flatten(spec: dict, prefix: str = "") -> dict:
    """{"file": {"driver": "x"}} -> {"file.driver": "x"}, for --target-image-opts."""
    flat = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
