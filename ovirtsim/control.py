"""The control API (`/ovirtsim/control/*`): test-only switches outside the engine's API.

Fault injection, guest writes (bytes, or a file of a guest filesystem), a running VM's qemu crash,
the request count and engine timings; basic auth as the admin.
"""

import base64
import json
import re

from ovirtsim import hosts_ssh, qemu
from ovirtsim.errors import EngineFault, bad_request, conflict, not_found

PREFIX = "/ovirtsim/control"


def authenticate(engine, authorization: str) -> None:
    # The test switches answer even while the reject_logins switch is on.
    expected = base64.b64encode(f"admin@internal:{engine.password}".encode()).decode()
    if authorization != f"Basic {expected}":
        raise EngineFault(401, "The control API needs the admin's basic credentials", reason="Unauthorized")


def _fail_requests(value: dict) -> dict:
    """The fail_requests switch, checked: a rate between 0 and 1 (or a count of `times`), a status the
    engine answers with (409, 500 or 503), HTTP methods, a path (a regular expression), and `after`:
    the engine acts on the request before the failure is answered (500 or 503 only)."""
    if not isinstance(value, dict) or set(value) - {"rate", "status", "methods", "seed", "times", "path", "after"}:
        raise bad_request("fail_requests takes rate, status, methods, seed, times, path and after")
    try:
        if value.get("path"):
            re.compile(value["path"])
        if value.get("times") is not None and int(value["times"]) < 0:
            raise ValueError
    except (re.error, TypeError, ValueError):
        raise bad_request("fail_requests: path must be a regular expression and times a count") from None
    try:
        rate, status = float(value.get("rate", 0)), int(value.get("status", 503))
    except (TypeError, ValueError):
        raise bad_request("fail_requests: rate and status must be numbers") from None
    if not 0 <= rate <= 1:
        raise bad_request("fail_requests: rate must be between 0 and 1")
    if status not in (409, 500, 503):
        raise bad_request("fail_requests: status must be 409, 500 or 503")
    if value.get("after") and status == 409:
        raise bad_request("fail_requests: a 409 is a refusal, answered before the engine acts (after: 500 or 503)")
    unknown = set(value.get("methods", [])) - {"GET", "POST", "PUT", "DELETE"}
    if unknown:
        raise bad_request(f"fail_requests: unknown method {sorted(unknown)[0]}")
    return value


def handle(engine, path: str, body: bytes) -> bytes:
    """Apply one control request; its JSON answer (200), or an EngineFault."""
    data = json.loads(body or b"{}")
    if path == "/ovirtsim/control/faults":
        for key, value in data.items():
            if not hasattr(engine.faults, key):
                raise bad_request(f"unknown fault switch {key}")
            if key == "fail_requests":
                value = _fail_requests(value or {})
                engine.fault_random.seed(value.get("seed"))
            setattr(engine.faults, key, type(getattr(engine.faults, key))(value))
        return json.dumps(vars(engine.faults)).encode()
    if path == "/ovirtsim/control/guest-write":
        try:
            engine.guest_write(data["id"], int(data["offset"]), base64.b64decode(data["data"]))
        except qemu.QemuError as e:
            raise conflict(f"The guest could not write to the disk: {e}") from None
        return b"{}"
    if path == "/ovirtsim/control/guest-write-file":
        for name in ("id", "fs", "path", "data"):
            if not isinstance(data.get(name), str):
                raise bad_request(f"guest-write-file takes id, fs, path and data (base64) as strings; {name} is not")
        try:
            content = base64.b64decode(data["data"], validate=True)
        except ValueError:
            raise bad_request("guest-write-file: data is not base64") from None
        try:
            mtime = data.get("mtime")
            if mtime is not None and not isinstance(mtime, int):
                raise bad_request("guest-write-file: mtime is POSIX seconds, an integer")
            engine.guest_write_file(data["id"], data["fs"], data["path"], content, mtime=mtime)
        except qemu.QemuError as e:
            raise conflict(f"The guest could not write the file: {e}") from None
        return b"{}"
    if path == "/ovirtsim/control/guest-agent":
        with engine.store.lock:
            vm = engine.get("vms", data["id"])
            vm["guest_agent"] = bool(data["running"])
            vm["guest_freeze_hangs"] = bool(data.get("freeze_hangs", False))
            engine.store.save()
        return b"{}"
    if path == "/ovirtsim/control/host-versions":
        with engine.store.lock:
            host = engine.store["hosts"].get(data["host"]) or engine.find_by_name("hosts", data["host"])
            if host is None:
                raise not_found("hosts", data["host"])
            for package in ("vdsm", "libvirt"):
                if package in data:
                    host.setdefault("versions", {})[package] = str(data[package])
            engine.store.save()
            return json.dumps(host["versions"]).encode()
    if path == "/ovirtsim/control/users":
        user = engine.add_user(str(data.get("name", "")), str(data.get("password", "")), list(data.get("permits", [])))
        return json.dumps({"id": user["id"], "login": user["login"]}).encode()
    if path == "/ovirtsim/control/lv-active-elsewhere":
        volumes = engine.set_lv_active_elsewhere(data["id"], data.get("host"))
        return json.dumps({"volumes": volumes}).encode()
    if path.startswith(f"{PREFIX}/hosts/"):
        return hosts_ssh.handle_control(engine, path, data)
    if path == "/ovirtsim/control/runs-here":
        return json.dumps({"device_dir": engine.set_runs_here(data["id"], bool(data.get("runs_here", True)))}).encode()
    if path == "/ovirtsim/control/crash-vm-qemu":
        engine.crash_vm_qemu(data["id"])
        return b"{}"
    if path == "/ovirtsim/control/stats":
        return json.dumps({"requests": engine.request_count, "failed": engine.failed_requests}).encode()
    if path == "/ovirtsim/control/settings":
        for key, value in data.items():
            engine.store.meta[key] = value
        return json.dumps(engine.store.meta.get("transfer_retention", 10)).encode()
    raise EngineFault(404, f"Resource {path} was not found", reason="Not Found")
