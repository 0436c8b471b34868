"""Hosts are real sshds: log in as root with an authorized key, read volumes where vdsm has them."""

import socket
import subprocess
import sys
from pathlib import Path

import ovirtsdk4.types as types
import pytest

from ovirtsim import Simulator
from ovirtsim.volume_meta import BLANK_UUID, parse
from tests.ovirtsim.helpers import MiB, add_disk, wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def client_key(tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "backup", "-f", str(key)], check=True)
    return key


def known_hosts(directory, host) -> str:
    """A known_hosts file pinning the key the engine reports for the host."""
    directory.mkdir(exist_ok=True)
    path = directory / f"known_hosts-{host.id}"
    path.write_text(f"[{host.address}]:{host.ssh.port} {host.ssh.public_key}\n")
    return str(path)


def ssh(host, key, known: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(key),
            "-p",
            str(host.ssh.port),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known}",
            "-o",
            "ConnectTimeout=10",
            f"root@{host.address}",
            command,
        ],
        capture_output=True,
        timeout=60,
    )


def the_host(conn):
    return conn.system_service().hosts_service().list()[0]


def vdsm_path(conn, disk_id: str, volume_id: str) -> str:
    """The volume's path on the host, derived as vdsm does from the domain's NFS address and path."""
    disk = conn.system_service().disks_service().disk_service(disk_id).get()
    sd = conn.system_service().storage_domains_service().storage_domain_service(disk.storage_domains[0].id).get()
    mount = f"/rhev/data-center/mnt/{sd.storage.address}:{sd.storage.path.replace('/', '_')}"
    return f"{mount}/{sd.id}/images/{disk_id}/{volume_id}"


def volumes(conn, disk_id: str) -> list[str]:
    """The disk's volume ids, base first, from the engine's disk snapshots (the active one included)."""
    service = conn.system_service().disks_service().disk_service(disk_id).disk_snapshots_service()
    snaps = service.list(query={"include_active": "true"})
    by_parent = {(s.parent.id if s.parent else None): s.id for s in snaps}
    chain, parent = [], None
    while parent in by_parent:
        parent = by_parent[parent]
        chain.append(parent)
    return chain


def local_volume(sim, conn, disk_id: str, volume_id: str):
    disk = conn.system_service().disks_service().disk_service(disk_id).get()
    return sim.state_dir / "storage" / disk.storage_domains[0].id / "images" / disk_id / volume_id


def test_it_lets_an_authorized_key_read_volumes_and_their_metadata_where_vdsm_has_them(
    sim, empty_conn, tmp_path, client_key
):
    host = the_host(empty_conn)
    assert host.address.startswith("127.0.1.")
    assert host.ssh.fingerprint.startswith("SHA256:")
    known = known_hosts(tmp_path, host)
    disk = add_disk(empty_conn, name="ssh", size=16 * MiB, fmt="raw", sparse=True)
    sim.guest_write(disk.id, MiB, b"\x5a" * MiB)

    refused = ssh(host, client_key, known, "true")
    assert refused.returncode == 255 and b"Permission denied" in refused.stderr

    sim.authorize_key(client_key.with_suffix(".pub").read_text())
    [volume] = volumes(empty_conn, disk.id)
    path = vdsm_path(empty_conn, disk.id, volume)
    read = ssh(host, client_key, known, f"cat {path}")
    assert read.returncode == 0, read.stderr
    assert read.stdout == local_volume(sim, empty_conn, disk.id, volume).read_bytes()
    assert read.stdout[MiB : 2 * MiB] == b"\x5a" * MiB

    meta = ssh(host, client_key, known, f"cat {path}.meta")
    assert meta.returncode == 0, meta.stderr
    text = meta.stdout.decode()
    assert text.endswith("EOF\n")
    fields = parse(text)
    assert fields == fields | {
        "CAP": str(16 * MiB),
        "FORMAT": "RAW",
        "TYPE": "SPARSE",
        "VOLTYPE": "LEAF",
        "PUUID": BLANK_UUID,
        "IMAGE": disk.id,
        "DOMAIN": disk.storage_domains[0].id,
        "LEGALITY": "LEGAL",
        "DISKTYPE": "DATA",
        "GEN": "0",
    }
    assert {"CTIME", "DESCRIPTION"} <= set(fields)
    # As vdsm writes it: keys sorted, one per line.
    assert list(fields) == sorted(fields)


def test_it_keeps_volume_metadata_in_step_with_snapshots_and_merges(sim, empty_conn, tmp_path, client_key):
    sim.authorize_key(client_key.with_suffix(".pub").read_text())
    host = the_host(empty_conn)
    known = known_hosts(tmp_path, host)
    disk = add_disk(empty_conn, name="chain", size=16 * MiB, fmt="cow")
    vms = empty_conn.system_service().vms_service()
    vm = vms.add(types.Vm(name="chain", cluster=types.Cluster(name="Default"), memory=2**30))
    vms.vm_service(vm.id).disk_attachments_service().add(
        types.DiskAttachment(disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO_SCSI, active=True)
    )
    snapshots = vms.vm_service(vm.id).snapshots_service()
    snap = snapshots.add(types.Snapshot(description="one", persist_memorystate=False))
    wait_for(lambda: snapshots.snapshot_service(snap.id).get().snapshot_status == types.SnapshotStatus.OK)

    base, top = volumes(empty_conn, disk.id)

    def meta(volume):
        result = ssh(host, client_key, known, f"cat {vdsm_path(empty_conn, disk.id, volume)}.meta")
        assert result.returncode == 0, result.stderr
        return parse(result.stdout.decode())

    assert meta(base)["VOLTYPE"] == "INTERNAL" and meta(base)["PUUID"] == BLANK_UUID
    assert meta(top) | {"VOLTYPE": "LEAF", "PUUID": base, "FORMAT": "COW"} == meta(top)
    # A layer's bytes over SSH are the file's: its QCOW2 header names the base as its backing file.
    layer = ssh(host, client_key, known, f"cat {vdsm_path(empty_conn, disk.id, top)}")
    assert layer.stdout == local_volume(sim, empty_conn, disk.id, top).read_bytes()
    assert base.encode() in layer.stdout[:4096]

    snapshots.snapshot_service(snap.id).remove()
    wait_for(lambda: snap.id not in {s.id for s in snapshots.list()}, what="snapshot merged")
    [remaining] = volumes(empty_conn, disk.id)
    assert meta(remaining)["VOLTYPE"] == "LEAF"
    listing = ssh(host, client_key, known, f"ls {vdsm_path(empty_conn, disk.id, '')}")
    assert sorted(listing.stdout.decode().split()) == sorted([remaining, f"{remaining}.meta"])


def test_it_shows_each_host_fault(sim, empty_conn, tmp_path, client_key):
    sim.authorize_key(client_key.with_suffix(".pub").read_text())
    host = the_host(empty_conn)
    known = known_hosts(tmp_path, host)
    disk = add_disk(empty_conn, name="faults", size=8 * MiB, fmt="raw")
    [volume] = volumes(empty_conn, disk.id)
    path = vdsm_path(empty_conn, disk.id, volume)
    assert ssh(host, client_key, known, f"test -f {path}").returncode == 0

    sim.set_host_faults(host.name, refuse_keys=True)
    result = ssh(host, client_key, known, "true")
    assert result.returncode == 255 and b"Permission denied" in result.stderr
    sim.set_host_faults(host.name, refuse_keys=False)
    assert ssh(host, client_key, known, "true").returncode == 0

    sim.set_host_faults(host.name, sshd_down=True)
    result = ssh(host, client_key, known, "true")
    assert result.returncode == 255 and b"Connection refused" in result.stderr
    sim.set_host_faults(host.name, sshd_down=False)
    assert ssh(host, client_key, known, "true").returncode == 0

    sim.set_host_faults(host.name, hide_image=disk.id)
    result = ssh(host, client_key, known, f"cat {path}")
    assert result.returncode == 1 and b"No such file or directory" in result.stderr
    assert local_volume(sim, empty_conn, disk.id, volume).exists()  # only the host's view lost it
    sim.set_host_faults(host.name, show_image=disk.id)
    assert ssh(host, client_key, known, f"test -f {path}").returncode == 0

    sim.set_host_faults(host.name, change_host_key=True)
    result = ssh(host, client_key, known, "true")
    assert result.returncode == 255 and b"REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr
    changed = the_host(empty_conn)
    assert changed.ssh.fingerprint != host.ssh.fingerprint
    assert ssh(changed, client_key, known_hosts(tmp_path / "changed", changed), "true").returncode == 0


def password_login(host: dict, password: str) -> str | None:
    """`uname -n` on the host after logging in as root with `password`; None when it is refused."""
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            host["address"],
            port=host["port"],
            username="root",
            password=password,
            allow_agent=False,
            look_for_keys=False,
            timeout=15,
        )
        _, stdout, _ = client.exec_command("uname -n")
        return stdout.read().decode().strip()
    except paramiko.AuthenticationException:
        return None
    finally:
        client.close()


def test_it_logs_root_in_with_the_password_set_on_one_host(demo_sim):
    """A host logs root in with a password only once one is set for it, and only that host; the
    machine's own /etc/shadow is not touched (each host's is its own, inside its namespace)."""
    import os

    before = os.stat("/etc/shadow")
    host1, host3 = demo_sim.host("host1"), demo_sim.host("host3")
    assert host3["root_password"] is False
    assert password_login(host3, "root-of-host3") is None  # keys only by default
    try:
        assert demo_sim.set_host_password("host3", "root-of-host3")["root_password"] is True
        assert password_login(host3, "root-of-host3") == "host3"
        assert password_login(host3, "something else") is None
        assert password_login(host1, "root-of-host3") is None
    finally:
        demo_sim.set_host_password("host3", None)
    assert password_login(host3, "root-of-host3") is None
    after = os.stat("/etc/shadow")
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    with pytest.raises(RuntimeError, match="password must be a string, or null for none"):
        demo_sim._control("hosts/password", {"host": "host3", "password": 5})


def test_it_authorizes_a_key_from_the_command_line_and_keeps_the_host_key(tmp_path, client_key):
    state = tmp_path / "engine"
    command = [sys.executable, "-m", "ovirtsim", "authorize-key", "--state-dir", str(state)]

    def authorize(key: str) -> subprocess.CompletedProcess:
        return subprocess.run([*command, key], capture_output=True, text=True, cwd=ROOT)

    bad = authorize("ssh-ed25519 not-base64!")
    assert bad.returncode == 2 and "not base64" in bad.stderr
    # Before the engine ever ran, and again while it runs.
    ok = authorize(client_key.with_suffix(".pub").read_text())
    assert ok.returncode == 0, ok.stderr
    with Simulator(state, seed="empty") as sim:
        connection = sim.connect()
        host = the_host(connection)
        known = known_hosts(tmp_path, host)
        assert ssh(host, client_key, known, "uname -n").stdout == b"host1\n"  # its own host name
        other = tmp_path / "other"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
        again = authorize(other.with_suffix(".pub").read_text())
        assert again.returncode == 0, again.stderr
        assert ssh(host, other, known, "true").returncode == 0
        connection.close()
    with Simulator(state, seed="empty", in_process=True) as sim:
        connection = sim.connect()
        restarted = the_host(connection)
        assert (restarted.address, restarted.ssh.public_key) == (host.address, host.ssh.public_key)
        assert ssh(restarted, client_key, known_hosts(tmp_path, restarted), "true").returncode == 0
        connection.close()


def test_it_listens_on_the_port_asked_for(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.1.1", 0))
        port = probe.getsockname()[1]
    with Simulator(tmp_path / "engine", seed="empty", ssh_port=port, in_process=True) as sim:
        connection = sim.connect()
        assert the_host(connection).ssh.port == port
        connection.close()
