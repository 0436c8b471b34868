"""A simulated oVirt engine: the REST API v4 control plane over a real data plane.

with Simulator(tmp_path) as sim:
    connection = sim.connect()             # an ovirtsdk4.Connection
    sim.guest_write(vm_id, 0, b"data")     # as the running guest would write
    sim.guest_write_file(vm_id, "p2", "/etc/hostname", b"web02\n")  # a file of its filesystem
    sim.set_faults(fail_next_snapshot=True)
"""

import base64
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["Simulator"]


class Simulator:
    """Start a simulated engine on a free port with its state in `state_dir`.

    `in_process=False` (the default) runs `python -m ovirtsim serve` as a subprocess, the way
    the service and the demo run it; `in_process=True` runs the same service in threads.
    """

    def __init__(
        self,
        state_dir,
        *,
        seed: str = "demo",
        in_process: bool = False,
        port: int = 0,
        ssh_port: int | None = None,
        start_timeout: float = 120,
    ):
        self.state_dir = Path(state_dir).resolve()
        self.seed = seed
        self.in_process = in_process
        self.port = port
        self.ssh_port = ssh_port
        self.start_timeout = start_timeout
        self.info: dict = {}
        self._proc: subprocess.Popen | None = None
        self._service = None

    # ----- life cycle -----

    def start(self) -> "Simulator":
        if self.in_process:
            from ovirtsim.service import EngineService

            self._service = EngineService(self.state_dir, port=self.port, seed=self.seed, ssh_port=self.ssh_port)
            self.info = self._service.start()
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        info_file = self.state_dir / "engine.json"
        info_file.unlink(missing_ok=True)
        with open(self.state_dir / "ovirtsim.log", "ab") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ovirtsim",
                    "serve",
                    "--state-dir",
                    str(self.state_dir),
                    "--port",
                    str(self.port),
                    "--seed",
                    self.seed,
                    *(["--ssh-port", str(self.ssh_port)] if self.ssh_port is not None else []),
                ],
                stdout=log,
                stderr=log,
                cwd=Path(__file__).resolve().parent.parent,
            )
        deadline = time.monotonic() + self.start_timeout
        while not info_file.exists():
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"ovirtsim exited with {self._proc.returncode}; the end of its log:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"ovirtsim did not start in {self.start_timeout}s; the end of its log:\n{self._log_tail()}"
                )
            time.sleep(0.05)
        self.info = json.loads(info_file.read_text())
        return self

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.state_dir / "ovirtsim.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError as e:
            return f"(no log: {e})"

    def stop(self) -> None:
        if self._service is not None:
            self._service.stop()
            self._service = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(60)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if (self.state_dir / "lvm").is_dir():
            # What a killed engine left attached (its PVs' loop devices are machine-wide, and a next
            # start would detach them, but there is none): detached here, as the engine's stop does.
            self.lvm().stop()
        self._clean_guest_devices()
        # What a killed engine left of the hosts' storage network (rpcbind, the namespace's mount).
        from ovirtsim import storage_net

        storage_net.stop(self.state_dir)

    def _clean_guest_devices(self) -> None:
        # The loop devices and dead FUSE mounts of the guests running here, when their qemus died
        # with a killed engine (a clean stop leaves none).
        from ovirtsim import guest_devices

        guest_devices.cleanup(self.state_dir)

    def kill(self) -> None:
        """Kill the engine -9, as a crash would: nothing is closed or saved on the way out, and what
        it started (imageio, the VMs' qemus, the hosts' sshds) dies with it. `start()` brings it
        back from its state directory, on the same port when one was given."""
        if self._proc is None:
            raise RuntimeError("Only a simulator run as its own process can be killed.")
        self._proc.kill()
        self._proc.wait()
        self._proc = None
        self._clean_guest_devices()  # its qemus died with it: their devices are of no use

    @property
    def storage_netns(self) -> str | None:
        """The hosts' storage network: a network namespace's file (`nsenter --net=PATH`) where the hosts
        do NFS, with rpcbind in it; a node serving them NFS runs its server there (NFS_NETNS), and
        127.0.0.1 inside it is that node. None when the simulator does not run as root."""
        return self.info.get("storage_netns")

    @property
    def running(self) -> bool:
        """Whether the engine runs (its process is alive, or its threads were started here)."""
        return self._service is not None or (self._proc is not None and self._proc.poll() is None)

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else os.getpid()

    # ----- connection details -----

    @property
    def url(self) -> str:
        return self.info["url"]

    @property
    def api_url(self) -> str:
        return self.info["api_url"]

    @property
    def username(self) -> str:
        return self.info["username"]

    @property
    def password(self) -> str:
        return self.info["password"]

    @property
    def ca_file(self) -> str:
        return self.info["ca_file"]

    @property
    def manager_fields(self) -> dict:
        """What registering this engine as a manager takes: API URL, user, password, CA (PEM)."""
        return {
            "api_url": self.api_url,
            "username": self.username,
            "password": self.password,
            "ca_certificate": Path(self.ca_file).read_text(),
        }

    def ovirt_img(self, command: str, *args: str) -> list[str]:
        """An `ovirt-img` (imageio's client tool) command line logged in to this engine."""
        password_file = self.state_dir / "ovirt-img.password"
        password_file.write_text(self.password)
        password_file.chmod(0o600)
        return [
            str(Path(sys.executable).with_name("ovirt-img")),
            command,
            "--engine-url",
            self.url,
            "--username",
            self.username,
            "--password-file",
            str(password_file),
            "--cafile",
            self.ca_file,
            *args,
        ]

    def connect(self, **kwargs):
        import ovirtsdk4

        options = {
            "url": self.api_url,
            "username": self.username,
            "password": self.password,
            "ca_file": self.ca_file,
        } | kwargs
        return ovirtsdk4.Connection(**options)

    # ----- test switches -----

    def _control(self, name: str, payload: dict) -> dict:
        context = ssl.create_default_context(cafile=self.ca_file)
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.url}/ovirtsim/control/{name}",
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, context=context, timeout=120) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as e:
            # The engine's fault body says what went wrong; the bare status does not.
            body = e.read().decode(errors="replace")
            detail = re.search(r"<detail>\[?(.*?)\]?</detail>", body, re.DOTALL)
            raise RuntimeError(f"ovirtsim {name} failed ({e.code}): {detail[1] if detail else body}") from None

    def guest_write(self, vm_or_disk_id: str, offset: int, data: bytes) -> None:
        """Write into the active layer of a disk (or a VM's boot disk), as the guest would."""
        self._control("guest-write", {"id": vm_or_disk_id, "offset": offset, "data": base64.b64encode(data).decode()})

    def guest_write_file(
        self, vm_or_disk_id: str, fs: str, path: str, data: bytes, *, mtime: int | None = None
    ) -> None:
        """Rewrite one file of an ext2/3/4 filesystem of a running VM's disk (or its boot disk) as its
        guest would, into the active layer: `fs` is `disk` (a filesystem on the whole disk), a
        partition `p1`, `p2`... or a logical volume of the guest's LVM `VG-LV` (`vg_db01-root`).
        The file keeps its mode and owner; a new one (its directory must exist) is 0644 root:root."""
        payload = {"id": vm_or_disk_id, "fs": fs, "path": path, "data": base64.b64encode(data).decode()}
        if mtime is not None:  # its modification time, POSIX seconds (else now)
            payload["mtime"] = mtime
        self._control("guest-write-file", payload)

    def set_guest_agent(self, vm_id: str, *, running: bool, freeze_hangs: bool = False) -> None:
        """Stop or start a VM's guest agent: without it the engine reports no guest details and a
        guest cannot be frozen for a consistent snapshot or backup. With `freeze_hangs` the agent
        runs but its freeze never returns: a quiesced live snapshot is accepted, then fails."""
        self._control("guest-agent", {"id": vm_id, "running": running, "freeze_hangs": freeze_hangs})

    def set_host_versions(self, host: str, **packages: str) -> dict:
        """What a host (name or id) reports of its packages, as RPM version-release:
        vdsm="4.30.46-1.el7", libvirt="5.0.0-1.el7". Returns the host's versions."""
        return self._control("host-versions", {"host": host, **packages})

    def add_user(self, name: str, password: str, permits: list[str]) -> dict:
        """A user NAME@internal with a role of its own holding these permits (the engine's names, e.g.
        manipulate_vm_snapshots, edit_disk_properties, create_disk; login is added): what its roles
        lack, the engine refuses with 403. Adding the same name again replaces its role.
        Returns {"id", "login"}."""
        return self._control("users", {"name": name, "password": password, "permits": permits})

    def set_faults(self, **switches) -> dict:
        """fail_next_snapshot, hang_next_vm_start, pause_next_transfer, delay_ms, reject_logins, finalize_backup_delay,
        move_speed (bytes/s), move_target_enospc, move_mirror_enospc, move_target_full, hold_move_pivot (disk moves),
        fail_requests={"rate": 0.05, "status": 409 | 500 | 503, "methods": ["POST", ...], "seed": 1}, or
        {"times": N, ..., "path": REGEX} for the next N requests whose path matches; "after": True
        answers the failure once the engine has acted (a 500 or 503 of a request that took effect)."""
        return self._control("faults", switches)

    def clear_faults(self) -> dict:
        return self.set_faults(
            fail_next_snapshot=False,
            hang_next_vm_start=False,
            pause_next_transfer=False,
            delay_ms=0,
            reject_logins=False,
            finalize_backup_delay=0,
            fail_requests={},
            move_speed=0,
            move_target_enospc=False,
            move_mirror_enospc=False,
            move_target_full=False,
            hold_move_pivot=False,
        )

    @property
    def proxy_device_dirs(self) -> dict[str, str]:
        """{VM name: directory} for the VMs running on this machine (backup proxies, `proxy01` in the
        demo): each directory plays that guest's /dev/disk/by-id, with a link per plugged disk
        (`virtio-` + the disk id's first 20 characters, or `scsi-0QEMU_QEMU_HARDDISK_` + the same)
        to a real block device (a loop device)."""
        return dict(self.info.get("proxy_device_dirs", {}))

    def set_runs_here(self, vm_id: str, runs_here: bool = True) -> str:
        """Treat a VM as running on this machine (a backup proxy), or no longer: while it is up, its
        guest's devices are made real. Returns its /dev/disk/by-id directory."""
        directory = self._control("runs-here", {"id": vm_id, "runs_here": runs_here})["device_dir"]
        info_file = self.state_dir / "engine.json"
        if info_file.exists():
            self.info = json.loads(info_file.read_text())  # its proxy_device_dirs changed
        return directory

    def crash_vm_qemu(self, vm_id: str) -> None:
        """Kill a running VM's qemu (SIGKILL) and start it again, as after a qemu crash: the
        checkpoint bitmaps it held are left inconsistent."""
        self._control("crash-vm-qemu", {"id": vm_id})

    def set_lv_active_elsewhere(self, disk_or_volume_id: str, host: str | None = "host9") -> list[str]:
        """Host fault: the disk's LVs (or one volume's) are active on another host, so activating them
        (lvchange -ay over SSH, a transfer, a VM start) fails with LVM's "LV locked by other host".
        host=None clears it. Returns the volume ids."""
        return self._control("lv-active-elsewhere", {"id": disk_or_volume_id, "host": host})["volumes"]

    def lvm(self):
        """The simulator's LVM (ovirtsim.lvm.Lvm) over the same state: VGs, LVs, activations per host."""
        from ovirtsim.lvm import Lvm

        return Lvm(self.state_dir)

    def request_count(self) -> int:
        """API requests served so far (to bound the calls a client makes)."""
        return self._control("stats", {})["requests"]

    def failed_requests(self) -> dict[int, int]:
        """API requests the fail_requests switch refused since the engine started, by status."""
        return {int(k): v for k, v in self._control("stats", {})["failed"].items()}

    # ----- hosts (sshd) -----

    def authorize_key(self, public_key: str) -> None:
        """Let `public_key` log in as root on every host; works whether or not the engine runs."""
        if self.info and (self._proc or self._service):
            self._control("hosts/authorize-key", {"key": public_key})
            return
        from ovirtsim.hosts_ssh import authorize_key

        authorize_key(self.state_dir, public_key)

    def hosts(self) -> list[dict]:
        """Each host's id, name, address, sshd port, host key and fingerprint, and its faults."""
        return self._control("hosts/info", {})

    def host(self, name_or_id: str) -> dict:
        return next(h for h in self.hosts() if name_or_id in (h["id"], h["name"]))

    def set_host_faults(self, host: str, **switches) -> dict:
        """On one host (name or id): sshd_down, refuse_keys, change_host_key=True, hide_image/show_image=DISK_ID."""
        return self._control("hosts/faults", {"host": host, **switches})

    def set_host_password(self, host: str, password: str | None) -> dict:
        """Root's password on one host (name or id): root may then log in with it, as on a host the
        engine added with its password and no key; None takes it away (keys only, the default)."""
        return self._control("hosts/password", {"host": host, "password": password})

    def set_hosts_reachable(self, reachable: bool) -> None:
        """With False, the hosts' imageio is unreachable from clients, as when the hosts' network is
        not routed to them: a new transfer's `transfer_url` (the host's address) refuses connections
        and only its `proxy_url` (the engine's imageio proxy, which still reaches the host) serves it."""
        self._control("settings", {"hosts_reachable": bool(reachable)})

    def configure(self, **settings) -> None:
        """Engine timings, e.g. transfer_retention (seconds a finished transfer stays listed)."""
        self._control("settings", settings)
