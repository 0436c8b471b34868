"""Tags, and the tags assigned to VMs."""

from ovirtsim.engine.core import EngineCore, new_id
from ovirtsim.errors import bad_request, conflict, not_found


class Tags(EngineCore):
    def add_tag(self, spec) -> dict:
        with self.store.lock:
            if not spec.name:
                raise bad_request("Cannot add Tag. The tag name is required (name).")
            if any(t["name"] == spec.name for t in self.store["tags"].values()):
                raise conflict("Cannot add Tag. Tag name is in use.")
            parent = self.get("tags", spec.parent.id)["id"] if spec.parent is not None and spec.parent.id else None
            tag = {"id": new_id(), "name": spec.name, "description": spec.description or "", "parent": parent}
            self.store["tags"][tag["id"]] = tag
            self.store.save()
            return tag

    def remove_tag(self, tag_id: str) -> None:
        with self.store.lock:
            self.get("tags", tag_id)
            del self.store["tags"][tag_id]
            for vm in self.store["vms"].values():
                if tag_id in vm["tags"]:
                    vm["tags"].remove(tag_id)
            self.store.save()

    def assign_vm_tag(self, vm_id: str, spec) -> dict:
        """Tag a VM with an existing tag, named by id or by name, as the engine accepts either."""
        with self.store.lock:
            vm = self.get("vms", vm_id)
            if spec.id:
                tag = self.get("tags", spec.id)
            else:
                tag = next((t for t in self.store["tags"].values() if t["name"] == spec.name), None)
                if tag is None:
                    raise not_found("tags", spec.name or "")
            if tag["id"] not in vm["tags"]:
                vm["tags"].append(tag["id"])
                self.store.save()
            return tag

    def unassign_vm_tag(self, vm_id: str, tag_id: str) -> None:
        with self.store.lock:
            vm = self.get("vms", vm_id)
            if tag_id not in vm["tags"]:
                raise not_found("tags", tag_id)
            vm["tags"].remove(tag_id)
            self.store.save()
