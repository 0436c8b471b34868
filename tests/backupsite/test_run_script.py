"""`make run`'s script on embedded defaults: it starts the simulated engine, registers it, serves
the web interface, and a Ctrl-C stops every process it started."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def processes_with(marker: str) -> list[int]:
    """Processes whose environment holds `marker` (every child of the script inherits it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def commands(pids: list[int]) -> list[str]:
    found = []
    for pid in pids:
        try:
            found.append(f"{pid} " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_it_starts_on_embedded_defaults_and_stops_everything_on_ctrl_c(tmp_path):
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "OVIRT_ENGINE_URL"}}
    env |= {
        "DATA_DIR": str(data_dir),
        "DJANGO_SETTINGS_MODULE": "backupsite.settings",
        "PY": sys.executable,
        "LISTEN": f"127.0.0.1:{free_port()}",
        "OVIRTSIM_PORT": str(free_port()),
        "OVIRTSIM_SSH_PORT": "",  # free ports for the demo hosts' sshds: port 22 may be taken here
        "NFS_PORT": "0",  # the node's NFS-Ganesha, if started, on a free port
        "NFS_BIND": "127.0.0.1",
    }
    marker = f"DATA_DIR={data_dir}"
    for first_start in (["init_secrets"], ["migrate", "--noinput", "-v0"]):
        subprocess.run([sys.executable, "manage.py", *first_start], cwd=ROOT, env=env, check=True)
    script = subprocess.Popen(
        ["scripts/run"], cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert script.poll() is None, script.stdout.read().decode(errors="replace")
            try:
                with urllib.request.urlopen(f"http://{env['LISTEN']}/login/", timeout=5) as page:
                    assert page.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the web interface did not come up"
                time.sleep(0.5)
        out = subprocess.run(
            [sys.executable, "-c", "import django; django.setup(); from inventory.models import Manager; "
             "print(Manager.objects.get().name)"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert out.stdout.strip() == "demo engine"
        assert len(processes_with(marker)) >= 4  # script, simulated engine, worker, web server
        if os.geteuid() == 0:  # Ganesha's VFS reads files by handle: root only
            # What an instant restore leaves once discarded: the node's NFS-Ganesha, serving nothing,
            # which workers leave running (jobs/nfs.py); a Ctrl-C of make run stops it too.
            subprocess.run(
                [sys.executable, "-c", "import django; django.setup(); from jobs.nfs import node_exporter; "
                 "node_exporter().start()"],
                cwd=ROOT, env=env, check=True, timeout=60,
            )  # fmt: skip
            assert any("ganesha.nfsd" in c for c in commands(processes_with(marker)))

        os.killpg(script.pid, signal.SIGINT)  # what a terminal sends its foreground group on Ctrl-C
        try:
            script.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the script did not stop; still running: {commands(processes_with(marker))}")
        deadline = time.monotonic() + 30
        while processes_with(marker):
            assert time.monotonic() < deadline, f"still running: {processes_with(marker)}"
            time.sleep(0.2)
    finally:
        for pid in processes_with(marker):
            os.kill(pid, signal.SIGKILL)
