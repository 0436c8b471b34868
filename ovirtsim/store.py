"""The simulated engine's database: one JSON document, saved atomically on every change."""

import json
import os
import threading
from pathlib import Path

COLLECTIONS = (
    "datacenters",
    "clusters",
    "hosts",
    "storagedomains",
    "vms",
    "disks",
    "snapshots",
    "imagetransfers",
    "backups",
    "checkpoints",
    "tags",
    "jobs",
    "events",
)


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        # Guards the document only; qemu and imageio work happens outside it.
        self.lock = threading.RLock()
        self.data: dict = {name: {} for name in COLLECTIONS}
        self.data["meta"] = {}
        if self.path.exists():
            loaded = json.loads(self.path.read_text())
            self.data.update(loaded)
            for name in COLLECTIONS:
                self.data.setdefault(name, {})

    def __getitem__(self, name: str) -> dict:
        return self.data[name]

    @property
    def meta(self) -> dict:
        return self.data["meta"]

    def save(self) -> None:
        with self.lock:
            tmp = self.path.with_suffix(".tmp")
            with open(tmp, "w") as f:
                # dumps, not dump: dump streams through the pure-Python encoder, several times slower
                # (a save writes the whole store, seconds for the `large` seed's 17,000 records).
                f.write(json.dumps(self.data, separators=(",", ":")))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
