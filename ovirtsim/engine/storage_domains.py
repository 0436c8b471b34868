"""Storage domains: their usage, from the real files in them; block domains' volume groups; removal."""

from ovirtsim.engine.core import DEFAULT_STORAGE_CAPACITY, EngineCore
from ovirtsim.errors import EngineFault, conflict, not_found


class StorageDomains(EngineCore):
    def ensure_volume_groups(self) -> None:
        """A block domain is a VG named by its id (made on first start; kept across restarts)."""
        with self.store.lock:
            domains = [dict(sd) for sd in self.store["storagedomains"].values() if sd.get("lvm")]
        existing = set(self.lvm.vgs())
        for sd in domains:
            if sd["id"] not in existing:
                capacity = sd.get("capacity", DEFAULT_STORAGE_CAPACITY)
                self.lvm.create_vg(sd["id"], capacity, tags=("RHAT_storage_domain",))

    def storage_usage(self, sd: dict) -> tuple[int, int, int]:
        """(available, used, committed) in bytes from the real files in the domain."""
        if sd["type"] == "export":
            # No disk of the engine's lives there: what the share's exported images and OVFs occupy.
            used = self.export_usage(sd)
            return max(0, sd.get("capacity", DEFAULT_STORAGE_CAPACITY) - used), used, 0
        used = committed = 0
        for disk in self.store["disks"].values():
            if disk["sd_id"] == sd["id"]:
                committed += disk["provisioned_size"]
                used += sum(self.store_actual(disk, v["id"]) for v in disk["volumes"])
        capacity = sd.get("capacity", DEFAULT_STORAGE_CAPACITY)
        return max(0, capacity - used), used, committed

    def remove_storage_domain(self, sd_id: str, *, host: str | None, format_: bool) -> None:
        """RemoveStorageDomain of an unattached export or imported data domain: the engine forgets
        it, its share keeps its files (format=false; formatting is not simulated)."""
        with self.store.lock:
            sd = self.get("storagedomains", sd_id)
            if not host:
                raise EngineFault(
                    400, "StorageDomain [host.id|name] required for remove", reason="Incomplete parameters"
                )
            if not any(host in (h["id"], h["name"]) for h in self.store["hosts"].values()):
                raise not_found("hosts", host)
            if sd["type"] != "export" and not sd.get("imported"):
                raise EngineFault(
                    501, "Removing this kind of storage domain is not simulated.", reason="Not Implemented"
                )
            if sd.get("dc_id"):
                status = (sd.get("status") or "active").capitalize()
                raise conflict(f"Cannot remove Storage. The relevant Storage Domain's status is {status}.")
            if format_:
                raise EngineFault(
                    501, "Formatting a storage domain (format=true) is not simulated.", reason="Not Implemented"
                )
            del self.store["storagedomains"][sd_id]
            self.event(f"Storage Domain {sd['name']} was removed by admin@internal-authz", code=960)
            self.store.save()
