import os
import shutil
import socket
import subprocess
import time

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from core import roles

# Playwright's sync API runs an event loop in the test thread; the ORM calls the tests make
# around it are still synchronous (made outside its block: see tests/browser.py).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
# The engine client asks a busy or failing engine again over about half a minute (1, 2, 4, 8, 16 s);
# the tests keep the five tries and their doubling, at a twentieth of the wait, for this process and
# the worker processes it starts (they inherit the environment).
TEST_RETRY_DELAYS = "0.05,0.1,0.2,0.4,0.8"
os.environ.setdefault("ENGINE_RETRY_DELAYS", TEST_RETRY_DELAYS)


@pytest.fixture(autouse=True, scope="session")
def short_engine_retries():
    """The settings may have been read before this module set the environment (pytest-django sets
    Django up early): the schedule is set on them too."""
    from django.conf import settings

    from core.env import env_seconds

    settings.ENGINE_RETRY_DELAYS = env_seconds("ENGINE_RETRY_DELAYS", ())
    assert len(settings.ENGINE_RETRY_DELAYS) == 5


PASSWORD = "a-Long-test-password-1"
NEEDED_TMP_SPACE = 4 * 1024**3  # the demo engine's 1 GiB disk, its backups and restores, with room


def pytest_sessionstart(session):
    """Say it plainly when /tmp is too full for the data plane, instead of failing tests at random."""
    import tempfile

    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < NEEDED_TMP_SPACE:
        pytest.exit(
            f"{tempfile.gettempdir()} has {free / 1024**3:.1f} GiB free; the tests write real disk images "
            f"and need about {NEEDED_TMP_SPACE / 1024**3:.0f} GiB.",
            returncode=3,
        )


def pytest_collection_modifyitems(items):
    """The slow tests first: xdist hands tests out in this order, and a long one handed out last
    keeps the run going while the other workers are idle (the soak alone takes about a minute)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The default hasher is slow on purpose; the suite creates hundreds of users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def backup_roots(settings, tmp_path_factory):
    """Destinations in tests live under the run's temporary directory."""
    settings.BACKUP_ROOTS = [str(tmp_path_factory.getbasetemp())]


@pytest.fixture(autouse=True)
def file_sessions_dir(settings, tmp_path_factory):
    """Browsing sessions (recovery.files) under this test process's own directory: each xdist worker
    has its own database, whose session ids start at 1 too, and a node closes whatever it finds in
    its FILES_DIR that no open session of its own holds."""
    settings.FILES_DIR = tmp_path_factory.getbasetemp() / "file-sessions"


@pytest.fixture
def make_user(db):
    def make(role: str | None, username: str | None = None):
        user = get_user_model().objects.create_user(username=username or f"{role or 'norole'}-user", password=PASSWORD)
        if role:
            roles.set_role(user, role)
        return user

    return make


@pytest.fixture
def users(make_user):
    return {role: make_user(role) for role in roles.ROLES} | {None: make_user(None)}


@pytest.fixture
def api_as(users):
    """An API client authenticated with a token of the user holding `role` (None: no role)."""

    from core.tokens import issue_token

    def client_for(role):
        client = APIClient()
        if role != "anonymous":
            _, key = issue_token(user=users[role], name="tests")
            client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        return client

    return client_for


@pytest.fixture
def destination_dir(tmp_path):
    path = tmp_path / "backups"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def demo_sim(tmp_path_factory):
    """One demo engine for the whole run. Tests that change it work on objects they create."""
    from ovirtsim import Simulator

    with Simulator(tmp_path_factory.mktemp("demo-engine"), seed="demo") as sim:
        yield sim


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ganesha_exporter(state_dir, netns: str = ""):
    """A node's NFS-Ganesha for tests: listening on 127.0.0.1 only, on a free port (jobs.nfs); with
    `netns` (a simulator's storage_netns, as NFS_NETNS) inside that namespace, NFSv3 and v4."""
    from jobs.nfs import GaneshaExporter

    return GaneshaExporter(state_dir=state_dir, address="127.0.0.1", port=0, bind="127.0.0.1", netns=netns)


@pytest.fixture(scope="module")
def storage_sim(tmp_path_factory):
    """An empty engine for the module (it starts in under a second) for its hosts' storage network:
    `storage_sim.storage_netns`, where the hosts do NFS (needs root). In this process, so that a test
    can add records the API cannot make (`storage_sim._service.engine`)."""
    from ovirtsim import Simulator

    if os.geteuid() != 0:
        pytest.skip("the hosts' storage network is a network namespace: needs root")
    with Simulator(tmp_path_factory.mktemp("storage-engine"), seed="empty", in_process=True) as sim:
        yield sim


@pytest.fixture(scope="module")
def netns_exporter(storage_sim, tmp_path_factory):
    """The node's NFS-Ganesha serving inside the module's engine's hosts' storage network (NFS_NETNS):
    NFSv3 and v4 at 127.0.0.1 there, registered with its rpcbind. Module-scoped: one Ganesha per
    namespace at a time, as one node serves a machine (each registers NFSv3 with the one rpcbind)."""
    exporter = ganesha_exporter(tmp_path_factory.mktemp("netns-ganesha"), netns=storage_sim.storage_netns)
    exporter.start()
    yield exporter
    for export in exporter.exports():
        exporter.unexport(export)
    exporter.stop()


@pytest.fixture(scope="session")
def nfs_exporter(tmp_path_factory):
    """One running NFS-Ganesha for the run, stopped at its end. Export with `clients=["127.0.0.1"]`
    and read with nfs-ls/nfs-cat/nfs-cp at `export.url(...)`; unexport what a test exported."""
    exporter = ganesha_exporter(tmp_path_factory.mktemp("nfs-exporter"))
    exporter.start()
    yield exporter
    exporter.stop()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A throwaway OpenSSH server on 127.0.0.1 accepting one generated key for the current user."""
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd_bin):
        pytest.fail("sshd is missing: run `make system-deps` (Debian package openssh-server)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n"
        f"PidFile {d}/sshd.pid\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
        "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
        "Subsystem sftp internal-sftp\n"  # for the network share (sshfs) of nas_share
    )
    os.makedirs("/run/sshd", exist_ok=True)
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("sshd did not start")
            time.sleep(0.05)
    yield {
        "port": port,
        "key": (d / "client_key").read_text(),
        "user": os.environ.get("USER") or "root",
        "host_key": " ".join((d / "host_key.pub").read_text().split()[:2]),
        "other_key": " ".join((d / "client_key.pub").read_text().split()[:2]),  # a valid key the server lacks
    }
    proc.terminate()
    proc.wait(10)


def mount_sshfs(sshd, tmp_path_factory, name: str, *, ssh_command: str = ""):
    """An sshfs mount of a fresh directory over the session's sshd; unmounted when the generator ends."""
    if not shutil.which("sshfs"):
        pytest.fail("sshfs is missing: run `make system-deps` (Debian packages sshfs and fuse3)")
    d = tmp_path_factory.mktemp(f"{name}-client")
    (d / "key").write_text(sshd["key"])
    os.chmod(d / "key", 0o600)
    (d / "known_hosts").write_text(f"[127.0.0.1]:{sshd['port']} {sshd['host_key']}\n")
    export, mountpoint = tmp_path_factory.mktemp(f"{name}-export"), tmp_path_factory.mktemp(name)
    options = (
        f"port={sshd['port']},IdentityFile={d / 'key'},UserKnownHostsFile={d / 'known_hosts'},"
        "StrictHostKeyChecking=yes,BatchMode=yes"
    )
    if ssh_command:
        options += f",ssh_command={ssh_command}"
    subprocess.run(["sshfs", "-o", options, f"{sshd['user']}@127.0.0.1:{export}", str(mountpoint)], check=True)
    yield mountpoint
    if subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True).returncode:
        subprocess.run(["fusermount3", "-uz", str(mountpoint)], check=True)  # busy: detach it lazily


@pytest.fixture(scope="session")
def nas_share(sshd, tmp_path_factory):
    """A real network filesystem mounted under the tests' backup roots: sshfs (FUSE, SFTP) over the
    session's sshd. Like NFS, SMB and other FUSE filesystems it has no renameat2 exchange; a file
    renamed over another is replaced atomically (OpenSSH's posix-rename extension)."""
    yield from mount_sshfs(sshd, tmp_path_factory, "nas")


SLOW_SHARE_RATE = 8 * 1024**2  # bytes a second


@pytest.fixture(scope="session")
def slow_share(sshd, tmp_path_factory):
    """A network share that takes writes at SLOW_SHARE_RATE (sshfs through tests/slow_ssh.py): a
    backup into it copies for seconds even with small disks, on any machine, so a test can act in
    the middle of the copy whatever tool the strategy copies with."""
    import sys
    from pathlib import Path

    slow_ssh = Path(__file__).with_name("slow_ssh.py")
    yield from mount_sshfs(
        sshd, tmp_path_factory, "slow", ssh_command=f"{sys.executable} {slow_ssh} {SLOW_SHARE_RATE} ssh"
    )


@pytest.fixture
def slow_destination(db, slow_share, tmp_path):
    """A destination on the slow share, of this test alone."""
    from repository.models import BackupDestination

    path = slow_share / tmp_path.name
    path.mkdir()
    return BackupDestination.objects.create(name="slow", path=str(path))


@pytest.fixture
def nas_destination(db, nas_share, tmp_path):
    """A destination on the network share, of this test alone."""
    from repository.models import BackupDestination

    path = nas_share / tmp_path.name
    path.mkdir()
    return BackupDestination.objects.create(name="nas", path=str(path))


def register_manager(sim, name: str = "demo"):
    """A Manager row for a running simulator, with its CA."""

    from inventory.models import Manager

    return Manager.objects.create(name=name, **sim.manager_fields)


@pytest.fixture
def manager(db, demo_sim):
    """The demo engine, registered and synced (a test module may define its own)."""
    from inventory.sync import sync_manager

    manager = register_manager(demo_sim)
    sync_manager(manager)
    return manager


@pytest.fixture
def names_free(monkeypatch):
    """Rows of an engine that is not there (tests.recovery.instant_helpers.make_estate): the restore
    wizard's and APIs' check of a new VM's name on the engine finds no VM of that name."""
    monkeypatch.setattr("recovery.restore.vm_named", lambda manager, name: None)


@pytest.fixture
def ssh_manager(manager, demo_sim):
    """The demo engine as an administrator sets it up: the site's public key installed on every host
    (root logs in with it: the hosts have no credentials of their own), host keys learnt at the first
    login, SSH ports as the engine reports them."""
    from core.ssh import site_key
    from inventory.models import Host

    demo_sim.authorize_key(site_key().public_key)
    hosts = {h.name: h for h in Host.objects.filter(manager=manager)}
    for info in demo_sim.hosts():
        host = hosts[info["name"]]
        assert (host.address, host.ssh_port, host.ssh_private_key) == (info["address"], info["port"], "")
    return manager


@pytest.fixture
def proxy01(manager, demo_sim, settings):
    """This process is the node inside the demo engine's proxy01 (Production), marked as its proxy."""
    from django.utils import timezone

    from inventory.models import VM, ProxyVM
    from jobs.models import Node

    vm = VM.objects.get(manager=manager, name="proxy01")
    node = Node.objects.create(
        name=settings.NODE_NAME, version="test", vm_id=str(vm.engine_id), heartbeat=timezone.now()
    )
    return ProxyVM.objects.create(vm=vm, node=node, device_dir=demo_sim.proxy_device_dirs["proxy01"])


@pytest.fixture
def destination(db, tmp_path):
    from repository.models import BackupDestination

    path = tmp_path / "repo"
    path.mkdir()
    return BackupDestination.objects.create(name="repo", path=str(path))
