"""The node's NFS exporter (jobs.nfs): a real NFS-Ganesha on a free loopback port, read and written
with libnfs' own tools (nfs-ls, nfs-cat, nfs-cp) as a host would mount the share; the site's own
server through a command that records what it was asked."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.nfs import (
    GANESHA_PACKAGES,
    CommandExporter,
    GaneshaExporter,
    NfsError,
    NfsExporter,
    node_exporter,
    port_accepts,
)
from tests.conftest import ganesha_exporter

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="exports are given to vdsm:kvm (36:36): needs root")


def nfs(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30)


def listing(export, path: str = "") -> list[str]:
    done = nfs("nfs-ls", export.url(path))
    assert done.returncode == 0, done.stderr
    return sorted(line.split()[-1] for line in done.stdout.splitlines())


@pytest.fixture(scope="module")
def ganesha(tmp_path_factory):
    exporter = ganesha_exporter(tmp_path_factory.mktemp("ganesha"))
    exporter.start()
    yield exporter
    exporter.stop()


@pytest.fixture
def exporter(ganesha):
    """The module's Ganesha, left without the exports of a test that failed half-way."""
    yield ganesha
    for export in ganesha.exports():
        ganesha.unexport(export)


@pytest.fixture
def share(tmp_path):
    """A directory holding a file and a subdirectory, as a data center's staging share would."""
    directory = tmp_path / "staging" / "Default"
    (directory / "master" / "vms").mkdir(parents=True)
    (directory / "hello.txt").write_text("hello from the node\n")
    return directory


def ganesha_processes(exporter) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(exporter.config_path)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "ganesha.nfsd" in line]


def test_it_serves_a_directory_that_a_host_reads_and_writes_as_vdsm(exporter, share):
    export = exporter.export(directory=share, pseudo="/staging/Default", clients=["127.0.0.1"])
    try:
        assert export.share == "127.0.0.1:/staging/Default"
        assert export.port == exporter.port != 0
        assert listing(export) == ["hello.txt", "master"]
        assert listing(export, "master") == ["vms"]
        assert nfs("nfs-cat", export.url("hello.txt")).stdout == "hello from the node\n"

        # The hosts' vdsm lays the export domain out in the share: it is theirs, whoever writes.
        assert (share.stat().st_uid, share.stat().st_gid) == (36, 36)
        written = share.parent / "metadata"
        written.write_text("CLASS=Backup\n" * 100)  # under 4 KiB: libnfs' NFSv4 writes fail above
        done = nfs("nfs-cp", str(written), export.url("metadata"))
        assert done.returncode == 0, done.stderr
        landed = share / "metadata"
        assert landed.read_text() == written.read_text()
        assert (landed.stat().st_uid, landed.stat().st_gid) == (36, 36)
        assert exporter.exports() == [export]
    finally:
        exporter.unexport(export)

    assert exporter.exports() == []
    done = nfs("nfs-ls", export.url())
    assert done.returncode != 0
    assert "NFS4ERR_NOENT" in done.stderr


def test_it_serves_a_read_only_share_and_keeps_the_others_while_one_comes_and_goes(exporter, tmp_path, share):
    backup = tmp_path / "point"
    backup.mkdir()
    (backup / "disk.qcow2").write_text("the backup's own file\n")
    before = (backup.stat().st_uid, backup.stat().st_gid)
    read_only = exporter.export(directory=backup, pseudo="/points/p1", clients=["127.0.0.1"], read_only=True)
    try:
        assert (backup.stat().st_uid, backup.stat().st_gid) == before  # nothing to write: left as it was
        assert listing(read_only) == ["disk.qcow2"]
        refused = nfs("nfs-cp", str(backup / "disk.qcow2"), read_only.url("new.txt"))
        assert refused.returncode != 0
        assert not (backup / "new.txt").exists()

        other = exporter.export(directory=share, pseudo="/staging/Default", clients=["127.0.0.1", "10.0.0.0/24"])
        assert listing(read_only) == ["disk.qcow2"]
        exporter.unexport(other)
        exporter.unexport(other)  # a cleanup that runs twice
        again = exporter.export(directory=share, pseudo="/staging/Default", clients=["127.0.0.1"])
        assert again.id > other.id > read_only.id  # a host's file handles name the export by its id
        exporter.unexport(again)
        assert nfs("nfs-cat", read_only.url("disk.qcow2")).stdout == "the backup's own file\n"
        # Every host reads as vdsm:kvm: a file only root may read is not readable through the share.
        (backup / "root-only").write_text("x")
        (backup / "root-only").chmod(0o600)
        assert "NFS4ERR_ACCESS" in nfs("nfs-cat", read_only.url("root-only")).stderr
    finally:
        exporter.unexport(read_only)


def test_it_refuses_what_cannot_be_exported(exporter, tmp_path, share):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (dict(directory=tmp_path / "gone"), f"The directory to export, {tmp_path / 'gone'}, does not exist."),
        (dict(directory=a_file), f"{a_file} is not a directory: only a directory can be exported."),
        (dict(directory=Path("relative")), "The directory to export must be an absolute path, not 'relative'."),
        (dict(pseudo="staging"), "'staging' is not an export path"),
        (dict(pseudo="/a b"), "'/a b' is not an export path"),
        (dict(clients=[]), "An export needs at least one client"),
        (dict(clients=["10.0.0.1; rm"]), "'10.0.0.1; rm' is not a client"),
    ]
    for given, says in cases:
        request = dict(directory=share, pseudo="/staging/Default", clients=["127.0.0.1"]) | given
        with pytest.raises(NfsError) as refused:
            exporter.export(**request)
        assert str(refused.value).startswith(says)

    first = exporter.export(directory=share, pseudo="/staging/Default", clients=["127.0.0.1"])
    try:
        for request in (dict(pseudo="/staging/Default", directory=tmp_path), dict(pseudo="/x", directory=share)):
            with pytest.raises(NfsError, match=f"{share} is already exported as 127.0.0.1:/staging/Default"):
                exporter.export(clients=["127.0.0.1"], **request)
    finally:
        exporter.unexport(first)


def test_it_says_why_ganesha_refused_an_export_and_serves_the_others_on(exporter, share):
    served = exporter.export(directory=share, pseudo="/staging/Default", clients=["127.0.0.1"])
    try:
        # A directory Ganesha's VFS backend cannot serve (a kernel's pseudo filesystem).
        with pytest.raises(NfsError) as refused:
            exporter.export(directory=Path("/proc/sys"), pseudo="/proc", clients=["127.0.0.1"], read_only=True)
        assert str(refused.value).startswith("NFS-Ganesha refused its new exports:\n")
        assert "Could not create export for (/proc) to (/proc/sys)" in str(refused.value)
        assert exporter.exports() == [served]
        assert "/proc/sys" not in exporter.config_path.read_text()
        assert listing(served) == ["hello.txt", "master"]
    finally:
        exporter.unexport(served)


def test_it_is_found_by_every_process_of_the_node_and_stops_leaving_nothing(tmp_path, share):
    exporter = ganesha_exporter(tmp_path / "state")
    exporter.start()
    try:
        export = exporter.export(directory=share, pseudo="/staging/Default", clients=["127.0.0.1"])
        # Another worker process of the node: the same state directory, the same Ganesha.
        other = ganesha_exporter(tmp_path / "state")
        other.start()
        assert other.port == exporter.port
        assert len(ganesha_processes(exporter)) == 1
        assert other.exports() == [export]

        exporter.stop()
        assert ganesha_processes(exporter) == []
        with socket.socket() as s:
            s.bind(("127.0.0.1", export.port))  # the port is free
        assert nfs("nfs-ls", export.url()).returncode != 0

        # A node's restart serves its shares again (an instant restore outlives a worker).
        other.start()
        (served,) = other.exports()
        assert listing(served) == ["hello.txt", "master"]
        other.unexport(served)
    finally:
        exporter.stop()
    assert ganesha_processes(exporter) == []


def test_it_takes_exports_from_several_workers_at_once(exporter, tmp_path):
    """A node's worker processes share one Ganesha: each its own exporter on the state directory."""
    from concurrent.futures import ThreadPoolExecutor

    def export_one(n: int):
        directory = tmp_path / f"dc{n}"
        directory.mkdir()
        (directory / f"file{n}").write_text(str(n))
        worker = ganesha_exporter(exporter.state_dir)
        return worker.export(directory=directory, pseudo=f"/staging/dc{n}", clients=["127.0.0.1"])

    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(export_one, range(4)))
    try:
        assert len({e.id for e in made}) == 4
        assert sorted(exporter.exports(), key=lambda e: e.id) == sorted(made, key=lambda e: e.id)
        for n, export in enumerate(made):
            assert listing(export) == [f"file{n}"]
    finally:
        for export in made:
            exporter.unexport(export)


def rpc_services(netns: str) -> set[tuple[str, str, int]]:
    """(service, version, port) that the namespace's rpcbind knows of."""
    out = nfs("nsenter", f"--net={netns}", "rpcinfo", "-p", "127.0.0.1").stdout
    return {(f[4], f[1], int(f[3])) for f in (line.split() for line in out.splitlines()[1:]) if len(f) == 5}


def test_it_serves_nfsv3_and_v4_in_the_hosts_storage_network(netns_exporter, storage_sim, share):
    """NFS_NETNS (the simulator's hosts' storage network): Ganesha serves inside it, NFSv4 and NFSv3
    (qemu's nfs driver), registered with the rpcbind there; nothing listens outside for it."""
    netns = storage_sim.storage_netns
    assert netns_exporter.netns == netns
    export = netns_exporter.export(directory=share, pseudo=str(share), clients=["127.0.0.1"])
    try:
        assert export.share == f"127.0.0.1:{share}"
        mount_port = json.loads((netns_exporter.state_dir / "server.json").read_text())["mount_port"]
        assert {("nfs", "3", export.port), ("nfs", "4", export.port), ("mountd", "3", mount_port)} <= rpc_services(
            netns
        )
        config = netns_exporter.config_path.read_text()
        assert f"MNT_Port = {mount_port}; Protocols = 3, 4;" in config and "Bind_addr" not in config
        assert "Protocols = 3, 4; Transports = TCP;" in config  # the export's
        inside = ["nsenter", f"--net={netns}"]
        for url in (export.url(), f"nfs://127.0.0.1{share}?version=3"):  # v3: ports from rpcbind
            done = nfs(*inside, "nfs-ls", url)
            assert done.returncode == 0, done.stderr
            assert sorted(line.split()[-1] for line in done.stdout.splitlines()) == ["hello.txt", "master"]
        # A host's qemu writes whole clusters over NFSv3 (libnfs' NFSv4 writes of 4 KiB or more fail).
        written = share.parent / "volume"
        written.write_bytes(os.urandom(256 * 1024))
        done = nfs(*inside, "nfs-cp", str(written), f"nfs://127.0.0.1{share}/volume?version=3")
        assert done.returncode == 0, done.stderr
        assert (share / "volume").read_bytes() == written.read_bytes()
        assert ((share / "volume").stat().st_uid, (share / "volume").stat().st_gid) == (36, 36)
        assert not port_accepts("127.0.0.1", export.port)  # not served where the node itself runs
    finally:
        netns_exporter.unexport(export)


def test_it_leaves_nothing_behind_in_a_network_namespace(tmp_path, share):
    """Started and stopped in a namespace of its own: no Ganesha left, the namespace's rpcbind no
    longer knows NFS; a namespace that is gone is named as such."""
    from ovirtsim import storage_net

    netns = str(storage_net.start(tmp_path / "net"))
    try:
        exporter = ganesha_exporter(tmp_path / "state", netns=netns)
        exporter.export(directory=share, pseudo=str(share), clients=["127.0.0.1"])  # starts it
        assert len(ganesha_processes(exporter)) == 1
        assert "nfs" in {service for service, _, _ in rpc_services(netns)}
        # A namespace made anew (the simulator restarted: a new one): the node's next start serves there.
        other = str(storage_net.start(tmp_path / "net2"))
        try:
            moved = ganesha_exporter(tmp_path / "state", netns=other)
            moved.start()
            (pid,) = [int(line.split()[0]) for line in ganesha_processes(exporter)]
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(other).st_ino
            assert nfs("nsenter", f"--net={other}", "nfs-ls", f"nfs://127.0.0.1{share}?version=3").returncode == 0
            exporter = ganesha_exporter(tmp_path / "state", netns=netns)
            exporter.start()  # and back
            assert "nfs" not in {service for service, _, _ in rpc_services(other)}
        finally:
            storage_net.stop(tmp_path / "net2")
        exporter.stop()
        assert ganesha_processes(exporter) == []
        assert "nfs" not in {service for service, _, _ in rpc_services(netns)}
    finally:
        storage_net.stop(tmp_path / "net")
    with pytest.raises(NfsError, match=rf"NFS_NETNS names {netns}, which does not exist"):
        ganesha_exporter(tmp_path / "state", netns=netns).start()


def test_it_says_what_to_install_when_ganesha_is_missing(tmp_path):
    exporter = GaneshaExporter(state_dir=tmp_path, address="127.0.0.1", port=0, binary="ganesha.nfsd-not-here")
    with pytest.raises(NfsError) as refused:
        exporter.start()
    assert f"install the Debian packages {GANESHA_PACKAGES}" in str(refused.value)
    assert GANESHA_PACKAGES == "nfs-ganesha nfs-ganesha-vfs"


def test_it_refuses_a_port_another_process_holds(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        exporter = GaneshaExporter(state_dir=tmp_path, address="127.0.0.1", port=port, bind="127.0.0.1")
        with pytest.raises(NfsError, match=f"Port {port} is taken by another process"):
            exporter.start()


def test_it_fails_with_the_log_of_a_ganesha_that_stops_at_start(tmp_path):
    fake = tmp_path / "ganesha.nfsd"
    fatal = "Bind_sockets :DISP :FATAL :Error binding to V6 interface. Cannot continue."
    fake.write_text(f"#!/bin/sh\necho '{fatal}'\nexit 2\n")
    fake.chmod(0o755)
    exporter = GaneshaExporter(state_dir=tmp_path / "state", address="127.0.0.1", port=0, binary=str(fake))
    with pytest.raises(NfsError) as refused:
        exporter.start()
    assert str(refused.value) == ("NFS-Ganesha stopped at start (exit status 2); its log ends:\n" + fatal)


def test_it_refuses_every_export_when_off(tmp_path, share):
    with pytest.raises(NfsError, match=r"This node serves no NFS share \(NFS_EXPORTER=off\)"):
        NfsExporter(state_dir=tmp_path).export(directory=share, pseudo="/s", clients=["127.0.0.1"])


RECORDER = """import json, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(sys.argv[2:]) + "\\n")
sys.exit(3 if "fail" in sys.argv[2:] else 0)
"""


def test_it_runs_the_sites_own_export_commands_without_a_shell(tmp_path, share):
    recorder = tmp_path / "record.py"
    recorder.write_text(RECORDER)
    calls = tmp_path / "calls"
    command = f"{sys.executable} {recorder} {calls}"
    exporter = CommandExporter(
        state_dir=tmp_path / "state",
        address="node1.example.com",
        export_command=f"{command} export -o {{options}} '{{clients}}:{{path}}'",
        unexport_command=f"{command} unexport {{clients}}:{{path}}",
    )
    export = exporter.export(directory=share, pseudo="/ignored", clients=["10.0.0.5", "10.0.1.0/24"])
    assert export.share == f"node1.example.com:{share}"
    assert (share.stat().st_uid, share.stat().st_gid) == (36, 36)
    exporter.unexport(export)
    options = "rw,sync,all_squash,anonuid=36,anongid=36"
    assert [line for line in calls.read_text().splitlines()] == [
        f'["export", "-o", "{options}", "10.0.0.5,10.0.1.0/24:{share}"]',
        f'["unexport", "10.0.0.5,10.0.1.0/24:{share}"]',
    ]
    assert exporter.exports() == []

    failing = CommandExporter(state_dir=tmp_path / "s2", address="n", export_command=f"{command} fail {{path}}")
    with pytest.raises(NfsError, match=rf"NFS_EXPORT_COMMAND failed \(exit status 3\) for {share}"):
        failing.export(directory=share, pseudo="/x", clients=["10.0.0.5"])
    assert failing.exports() == []
    with pytest.raises(NfsError, match="NFS_EXPORTER=command needs NFS_EXPORT_COMMAND"):
        CommandExporter(state_dir=tmp_path / "s3", address="n").export(directory=share, clients=["10.0.0.5"])


@pytest.mark.parametrize(
    ("kind", "cls"), [("ganesha", GaneshaExporter), ("command", CommandExporter), ("off", NfsExporter)]
)
def test_it_is_chosen_by_the_settings(settings, tmp_path, kind, cls):
    settings.DATA_DIR = tmp_path
    settings.NFS_EXPORTER = kind
    settings.NFS_ADDRESS = "node1.example.com"
    exporter = node_exporter()
    assert type(exporter) is cls
    assert (exporter.state_dir, exporter.address, exporter.kind) == (tmp_path / "nfs", "node1.example.com", kind)


def test_it_serves_in_the_network_namespace_the_settings_name(settings, tmp_path):
    """NFS_NETNS: Ganesha runs inside it, where the hosts reach the node at 127.0.0.1 only."""
    settings.DATA_DIR, settings.NFS_EXPORTER, settings.NFS_ADDRESS = tmp_path, "ganesha", "node1.example.com"
    settings.NFS_NETNS = "/run/netns/storage"
    exporter = node_exporter()
    assert (exporter.netns, exporter.address) == ("/run/netns/storage", "127.0.0.1")
    settings.NFS_NETNS = ""
    assert (node_exporter().netns, node_exporter().address) == ("", "node1.example.com")


def test_it_gives_other_tests_a_running_exporter(nfs_exporter, share):
    export = nfs_exporter.export(directory=share, pseudo="/staging/Default", clients=["127.0.0.1"])
    try:
        assert listing(export) == ["hello.txt", "master"]
    finally:
        nfs_exporter.unexport(export)


def test_it_stops_the_service_at_start_on_a_site_command_missing(settings):
    from jobs.checks import check_nfs_settings

    settings.NFS_EXPORTER = "command"
    settings.NFS_EXPORT_COMMAND = "/usr/local/sbin/share {path} {clients} {options}"
    settings.NFS_UNEXPORT_COMMAND = " "
    (error,) = check_nfs_settings(None)
    assert error.msg == (
        "NFS_EXPORTER is command but NFS_UNEXPORT_COMMAND is empty: give the site's command, with {path}, "
        "{clients} and {options} where they go."
    )
    settings.NFS_EXPORTER = "ganesha"
    assert check_nfs_settings(None) == []
    settings.NFS_PORT = 70000
    assert [e.id for e in check_nfs_settings(None)] == ["jobs.E003"]
    settings.NFS_PORT, settings.NFS_NETNS = 2049, "/run/netns/storage"
    assert check_nfs_settings(None) == []
    for exporter, netns in (("command", "/run/netns/storage"), ("ganesha", "storage")):
        settings.NFS_EXPORTER, settings.NFS_NETNS = exporter, netns
        assert "jobs.E005" in [e.id for e in check_nfs_settings(None)]
