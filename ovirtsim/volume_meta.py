"""vdsm's volume metadata (`VOL_ID.meta`) next to each volume of a file storage domain.

vdsm keeps one `KEY=VALUE` file per volume, keys sorted, ended by `EOF` (storage format V5: the
capacity in bytes as `CAP`, the generation as `GEN`). A tool reading volumes off a host (the SSH
strategy) learns the chain from it: `PUUID` is the parent, `VOLTYPE` says which one is the leaf.
Block domains keep this in their metadata LV instead, so only file domains get `.meta` files.
"""

import json
import os
import threading
import time
from pathlib import Path

BLANK_UUID = "00000000-0000-0000-0000-000000000000"
_write_lock = threading.Lock()


def meta_path(volume_path: Path) -> Path:
    return volume_path.with_name(volume_path.name + ".meta")


def render(fields: dict) -> str:
    return "".join(f"{key}={fields[key]}\n" for key in sorted(fields)) + "EOF\n"


def parse(text: str) -> dict:
    fields = {}
    for line in text.splitlines():
        if line.startswith("EOF"):
            break
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def write_disk_meta(engine, disk: dict) -> None:
    """Bring the `.meta` files of `disk` in step with its volume chain (file domains only)."""
    with engine.store.lock:
        sd = engine.store["storagedomains"].get(disk["sd_id"])
        if sd is None or sd["block"] or disk["id"] not in engine.store["disks"]:
            return
        volumes = [dict(v) for v in disk["volumes"]]
        image_dir = Path(sd["path"]) / "images" / disk["id"]
        illegal = disk["status"] == "illegal"
        description = json.dumps({"DiskAlias": disk["name"], "DiskDescription": disk.get("description", "")})
        sparse = disk["sparse"]
    if not image_dir.is_dir():
        return  # records without image files (the scale seed)
    with _write_lock:
        _write(image_dir, disk, volumes, illegal, description, sparse)


def write_image_meta(
    image_dir: Path,
    *,
    domain_id: str,
    image_id: str,
    capacity: int,
    volumes: list[dict],
    alias: str,
    description: str = "",
    sparse: bool = True,
) -> list[Path]:
    """The `.meta` files of an image that is no disk of the engine's (an export domain's copy of
    one): `volumes` base first, each {"id", "format"}; `sparse` is the base volume's allocation.
    Returns the files written."""
    pseudo_disk = {"provisioned_size": capacity, "sd_id": domain_id, "id": image_id}
    text = json.dumps({"DiskAlias": alias, "DiskDescription": description})
    with _write_lock:
        _write(image_dir, pseudo_disk, volumes, False, text, sparse)
    return [meta_path(image_dir / v["id"]) for v in volumes]


def _write(image_dir: Path, disk: dict, volumes: list[dict], illegal: bool, description: str, sparse: bool) -> None:
    wanted = set()
    for index, volume in enumerate(volumes):
        path = image_dir / volume["id"]
        if not path.exists():
            continue
        leaf = index == len(volumes) - 1
        fields = {
            "CAP": disk["provisioned_size"],
            "CTIME": _ctime(path),
            "DESCRIPTION": description if index == 0 else "",
            "DISKTYPE": "DATA",
            "DOMAIN": disk["sd_id"],
            "FORMAT": "COW" if volume["format"] == "cow" else "RAW",
            "GEN": 0,
            "IMAGE": disk["id"],
            "LEGALITY": "ILLEGAL" if illegal and leaf else "LEGAL",
            "PUUID": volumes[index - 1]["id"] if index else BLANK_UUID,
            "TYPE": "SPARSE" if sparse or index else "PREALLOCATED",
            "VOLTYPE": "LEAF" if leaf else "INTERNAL",
        }
        target = meta_path(path)
        wanted.add(target.name)
        text = render(fields)
        try:
            if target.read_text() == text:
                continue
        except OSError:
            pass
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    # A merged-away volume's metadata goes with it, as vdsm removes both.
    for stale in image_dir.glob("*.meta"):
        if stale.name not in wanted:
            stale.unlink(missing_ok=True)


def _ctime(path: Path) -> int:
    # The creation time stays what the first write recorded.
    try:
        return int(parse(meta_path(path).read_text())["CTIME"])
    except (OSError, KeyError, ValueError):
        pass
    try:
        return int(path.stat().st_mtime)
    except OSError:
        return int(time.time())
