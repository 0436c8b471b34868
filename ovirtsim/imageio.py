"""The real ovirt-imageio daemon, run as a plain process, and its control API.

Two of them run, as on an oVirt setup: the hosts' daemon (vdsm's, port 54322 on a host), which
serves the volumes and whose address the engine gives clients as a transfer's `transfer_url`, and
the engine's own daemon acting as an imageio proxy (port 54323 on the engine), `proxy_url`, which
a client uses when it cannot reach the host: its tickets point at the host daemon's ticket (the
daemon's http backend). The engine (through vdsm) adds a ticket per image transfer and removes it
when the transfer ends; this module does the same over each daemon's control socket.
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ovirtsim.processes import spawn_with_engine


class ImageioError(RuntimeError):
    pass


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


CONF = """\
[daemon]
run_dir = {run_dir}
drop_privileges = false
systemd_enable = false
poll_interval = 0.2

[tls]
enable = true
key_file = {key_file}
cert_file = {cert_file}
ca_file = {ca_file}

[remote]
host = {host}
port = {port}

[local]
enable = false

[control]
transport = unix
socket = {control_socket}

[backend_http]
ca_file = {ca_file}

[handlers]
keys = stderr

[logger_root]
handlers = stderr
level = INFO
"""


class ImageioDaemon:
    def __init__(
        self,
        state_dir: Path,
        *,
        cert_file: Path,
        key_file: Path,
        ca_file: Path,
        host: str = "127.0.0.1",
        run_dir: Path | None = None,
        name: str = "imageio",
    ):
        self.dir = Path(state_dir) / name
        self.run_dir = Path(run_dir) if run_dir else self.dir / "run"
        self.control_socket = self.run_dir / "control.sock"
        self.log_file = self.dir / "daemon.log"
        self.cert_file, self.key_file, self.ca_file = cert_file, key_file, ca_file
        self.host = host
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log_start = 0
        self._lock = threading.Lock()

    def start(self, timeout: float = 30) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the daemon without waiting for it to listen (`wait_ready`), so two start at once."""
        conf_dir = self.dir / "conf"
        (conf_dir / "conf.d").mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "conf.d" / "50-ovirtsim.conf").write_text(
            CONF.format(
                run_dir=self.run_dir,
                key_file=self.key_file,
                cert_file=self.cert_file,
                ca_file=self.ca_file,
                host=self.host,
                port=0,
                control_socket=self.control_socket,
            )
        )
        exe = Path(sys.executable).with_name("ovirt-imageio")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ovirt_imageio._internal.server"]
        # After a kill the log still names the old daemon's port and its control socket is still there:
        # only what this daemon writes, and the socket it makes, say that it listens.
        self.control_socket.unlink(missing_ok=True)
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            # Dies with the simulator, killed or not, as a host's daemons would with the host.
            self.proc = spawn_with_engine(
                [*cmd, "--conf-dir", str(conf_dir)], stdout=log, stderr=log, start_new_session=True
            )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        pattern = re.compile(rb"remote\.service.*listening on \('[^']*', (\d+)")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ImageioError(f"ovirt-imageio exited: see {self.log_file}")
            found = pattern.findall(self.log_file.read_bytes()[self._log_start :])
            if found and self.control_socket.exists():
                self.port = int(found[-1])
                return
            time.sleep(0.05)
        self.stop()
        raise ImageioError(f"ovirt-imageio did not start in {timeout}s: see {self.log_file}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    @property
    def images_url(self) -> str:
        return f"https://{self.host}:{self.port}/images"

    def _request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        conn = _UnixHTTPConnection(str(self.control_socket))
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def add_ticket(self, ticket: dict) -> None:
        status, body = self._request("PUT", f"/tickets/{ticket['uuid']}", ticket)
        if status != 200:
            raise ImageioError(f"adding ticket failed: {status} {body.decode(errors='replace')}")

    def get_ticket(self, ticket_id: str) -> dict | None:
        status, body = self._request("GET", f"/tickets/{ticket_id}")
        if status == 404:
            return None
        if status != 200:
            raise ImageioError(f"reading ticket failed: {status} {body.decode(errors='replace')}")
        return json.loads(body)

    def remove_ticket(self, ticket_id: str) -> None:
        status, body = self._request("DELETE", f"/tickets/{ticket_id}")
        if status not in (200, 204, 404):
            raise ImageioError(f"removing ticket failed: {status} {body.decode(errors='replace')}")
