"""The control API (`/ovirtsim/control/*`): test-only switches outside the engine's API.

Fault injection, guest writes, a running VM's qemu crash, the request count and engine timings;
basic auth as the admin.
"""

import base64
import json

from ovirtsim import hosts_ssh, qemu
from ovirtsim.errors import EngineFault, bad_request, conflict

PREFIX = "/ovirtsim/control"


def authenticate(engine, authorization: str) -> None:
    # The test switches answer even while the reject_logins switch is on.
    expected = base64.b64encode(f"admin@internal:{engine.password}".encode()).decode()
    if authorization != f"Basic {expected}":
        raise EngineFault(401, "The control API needs the admin's basic credentials", reason="Unauthorized")


def handle(engine, path: str, body: bytes) -> bytes:
    """Apply one control request; its JSON answer (200), or an EngineFault."""
    data = json.loads(body or b"{}")
    if path == "/ovirtsim/control/faults":
        for key, value in data.items():
            if not hasattr(engine.faults, key):
                raise bad_request(f"unknown fault switch {key}")
            setattr(engine.faults, key, type(getattr(engine.faults, key))(value))
        return json.dumps(vars(engine.faults)).encode()
    if path == "/ovirtsim/control/guest-write":
        try:
            engine.guest_write(data["id"], int(data["offset"]), base64.b64decode(data["data"]))
        except qemu.QemuError as e:
            raise conflict(f"The guest could not write to the disk: {e}") from None
        return b"{}"
    if path == "/ovirtsim/control/guest-agent":
        with engine.store.lock:
            vm = engine.get("vms", data["id"])
            vm["guest_agent"] = bool(data["running"])
            engine.store.save()
        return b"{}"
    if path == "/ovirtsim/control/lv-active-elsewhere":
        volumes = engine.set_lv_active_elsewhere(data["id"], data.get("host"))
        return json.dumps({"volumes": volumes}).encode()
    if path.startswith(f"{PREFIX}/hosts/"):
        return hosts_ssh.handle_control(engine, path, data)
    if path == "/ovirtsim/control/crash-vm-qemu":
        engine.crash_vm_qemu(data["id"])
        return b"{}"
    if path == "/ovirtsim/control/stats":
        return json.dumps({"requests": engine.request_count}).encode()
    if path == "/ovirtsim/control/settings":
        for key, value in data.items():
            engine.store.meta[key] = value
        return json.dumps(engine.store.meta.get("transfer_retention", 10)).encode()
    raise EngineFault(404, f"Resource {path} was not found", reason="Not Found")
