"""File-level restore's core (recovery.files): a point opened read-only, its filesystems browsed and
read, folders streamed, files put back over guest SSH, and nothing left once a session closes."""

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from inventory.models import VM
from jobs.models import Job
from jobs.nodes import ON_BEAT, ON_JOIN, run_node_hooks
from jobs.runner import run_job
from policies.models import Policy
from recovery.files import tree as trees
from recovery.files.browse import download, list_place
from recovery.files.errors import FilesError, NotFound
from recovery.files.putback import request_put_back
from recovery.files.sessions import close_session, open_session
from recovery.models import FileSession
from repository.claims import PointBusy
from repository.models import BackupPoint
from repository.retention import delete_backup, prune_policy
from tests.helpers import backup, worker_env


def leftovers(session: FileSession) -> list[str]:
    """What of the session is still on this machine: mounts, loop devices, processes, files."""
    workdir = session.workdir
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4].startswith(workdir + "/"):
            found.append(f"mount {line.split()[4]}")
    loops = subprocess.run(["losetup", "-J", "-l"], capture_output=True, text=True).stdout
    for loop in json.loads(loops or "{}").get("loopdevices", []):
        if (loop.get("back-file") or "").startswith(workdir + "/"):
            found.append(f"loop {loop['name']}")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (workdir + "/").encode() in (proc / "cmdline").read_bytes():
                    found.append(f"process {proc.name}")
            except OSError:
                pass
    if Path(workdir).exists():
        found.append(f"directory {workdir}")
    return found


def stored_digests(point: BackupPoint) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in point.directory.path.iterdir() if p.is_file()}


def filesystem_of(session: FileSession, disk: str, fs_type: str) -> dict:
    return next(fs for fs in session.disk(disk)["filesystems"] if fs["type"] == fs_type)


@pytest.fixture
def app01_point(manager, destination, demo_sim):
    vm = VM.objects.get(manager=manager, name="app01")
    return BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])


def test_it_browses_a_point_and_leaves_nothing_behind(app01_point, settings):
    point = app01_point
    before = stored_digests(point)
    session = open_session(point=point, who="tester", origin="cli")
    try:
        assert session.status == FileSession.Status.OPEN
        assert [d["alias"] for d in session.disks] == ["app01_disk1", "app01_disk2", "app01_disk3"]
        fs = filesystem_of(session, "app01_disk1", "ext4")
        assert fs["label"] == "app01" and fs["bytes"] > 0 and 0 < fs["used"] < fs["bytes"]
        # A disk of raw data: said in words, the session still serves the others.
        assert session.disk("app01_disk2")["problem"].startswith("Disk app01_disk2 holds no partition table")

        where, listing = list_place(session, disk="app01_disk1", path=f"/{fs['key']}/data")
        assert [e.name for e in listing.entries] == [f"file{n}.bin" for n in range(4)]
        assert all(e.size == 256 * 1024 and e.kind == "file" for e in listing.entries)
        got = download(session, disk="app01_disk1", path=f"/{fs['key']}/etc/hostname")
        assert got.size == 6 and b"".join(got.chunks) == b"app01\n"

        archive = download(session, disk="app01_disk1", path=f"/{fs['key']}/data")
        assert archive.filename == "data.tar"
        with tarfile.open(fileobj=io.BytesIO(b"".join(archive.chunks))) as tar:
            members = {m.name: m for m in tar.getmembers()}
            assert set(members) == {"data"} | {f"data/file{n}.bin" for n in range(4)}
            assert tar.extractfile("data/file2.bin").read() == bytes([3]) * 256 * 1024

        page = list_place(session, disk="app01_disk1", path=f"/{fs['key']}/data", per_page=3, page=2)[1]
        assert [e.name for e in page.entries] == ["file3.bin"] and page.pages == 2 and page.total == 4
        found = list_place(session, disk="app01_disk1", path=f"/{fs['key']}/data", search="LE1")[1]
        assert [e.name for e in found.entries] == ["file1.bin"]
        with pytest.raises(NotFound, match="/etc/nothing does not exist"):
            list_place(session, disk="app01_disk1", path=f"/{fs['key']}/etc/nothing")
        with pytest.raises(FilesError, match="without . or .."):
            download(session, disk="app01_disk1", path=f"/{fs['key']}/etc/../../x")
        with pytest.raises(FilesError, match="has no filesystem p9"):
            list_place(session, disk="app01_disk1", path="/p9")

        # While it is open the point is kept: a deletion (as retention makes it) is refused, saying why.
        with pytest.raises(PointBusy, match=f"being browsed by browsing session {session.pk}"):
            delete_backup(point=point, with_dependants=False)
    finally:
        assert close_session(session, reason="test over")
    assert leftovers(session) == []
    assert stored_digests(point) == before, "browsing wrote nothing into the backup"
    assert not point.claims.exists()
    delete_backup(point=point, with_dependants=False)  # no longer held


def test_it_refuses_a_damaged_point_with_what_verify_found(app01_point):
    BackupPoint.objects.filter(pk=app01_point.pk).update(
        status=BackupPoint.Status.DAMAGED, damage="app01_disk1.qcow2 does not match its checksum."
    )
    app01_point.refresh_from_db()
    with pytest.raises(FilesError, match="is damaged \\(app01_disk1.qcow2 does not match its checksum.\\)"):
        open_session(point=app01_point, who="tester", origin="cli")
    assert not FileSession.objects.exists()


def test_it_refuses_a_point_whose_file_is_missing_and_keeps_nothing_open(app01_point):
    next(app01_point.directory.path.glob("*.qcow2")).unlink()
    with pytest.raises(FilesError, match="is damaged: .* is missing"):
        open_session(point=app01_point, who="tester", origin="cli")
    assert not app01_point.claims.exists()


def test_it_closes_idle_sessions_and_every_session_when_the_node_starts(app01_point, settings):
    settings.FILES_IDLE_TIMEOUT = 60
    idle = open_session(point=app01_point, who="tester", origin="cli")
    busy = open_session(point=app01_point, who="tester", origin="cli")
    FileSession.objects.filter(pk=idle.pk).update(last_used=timezone.now() - timedelta(seconds=61))
    assert run_node_hooks(ON_BEAT) == []  # what the node's worker runs at each heartbeat
    idle.refresh_from_db()
    assert idle.status == FileSession.Status.CLOSED and idle.close_reason == "nobody used it for 1 min"
    assert leftovers(idle) == []
    with pytest.raises(FilesError, match="is closed: nobody used it for 1 min. Open the backup again"):
        list_place(idle, disk=None, path="/")

    # A worker killed with the session open leaves its processes and mounts (they are not its
    # children); a directory whose record was never written (killed while opening) too.
    orphan = Path(settings.FILES_DIR) / "999999"
    (orphan / "mnt").mkdir(parents=True)
    assert leftovers(busy) != []
    assert run_node_hooks(ON_JOIN) == []  # what the node's worker runs when it starts
    busy.refresh_from_db()
    assert busy.status == FileSession.Status.CLOSED and busy.close_reason == "its node restarted"
    assert leftovers(busy) == [] and not orphan.exists()


def test_it_holds_at_most_the_node_limit_open(app01_point, settings):
    settings.FILES_SESSIONS_PER_NODE = 1
    first = open_session(point=app01_point, who="alice", origin="page")
    try:
        with pytest.raises(
            FilesError, match=f"1 browsing sessions are open on node .*close one first .*{first.pk} \\(alice\\)"
        ):
            open_session(point=app01_point, who="bob", origin="page")
    finally:
        close_session(first, reason="test over")


def test_it_never_follows_a_link_out_of_the_guest_filesystem(tmp_path):
    """A hostile guest's links lead nowhere: listed as links, refused as files and folders, stored
    as links in archives."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "motd").write_text("hello\n")
    os.symlink("../../../../../../etc", root / "etc" / "host-etc")
    os.symlink("/etc/shadow", root / "etc" / "shadow-link")
    tree = trees.MountedTree(root)
    listing = trees.list_folder(tree, ["etc"], cache_key=("links", str(tmp_path)))
    kinds = {e.name: (e.kind, e.target) for e in listing.entries}
    assert kinds["host-etc"] == ("symlink", "../../../../../../etc")
    with pytest.raises(FilesError, match="/etc/host-etc is a symbolic link to ../../../../../../etc; links are not"):
        trees.list_folder(tree, ["etc", "host-etc"], cache_key=("links2", str(tmp_path)))
    with pytest.raises(FilesError, match="/etc/shadow-link is a symbolic link to /etc/shadow"):
        trees.stream_file(tree, ["etc", "shadow-link"])
    with pytest.raises(FilesError, match="symbolic link"):
        trees.stream_file(tree, ["etc", "host-etc", "passwd"])
    with tarfile.open(fileobj=io.BytesIO(b"".join(trees.stream_tar(tree, ["etc"], prefix=[])))) as tar:
        link = tar.getmember("etc/shadow-link")
        assert link.issym() and link.linkname == "/etc/shadow"
        assert tar.extractfile("etc/motd").read() == b"hello\n"


def test_it_puts_files_back_into_the_guest_over_ssh_never_overwriting_unasked(app01_point, sshd, tmp_path):
    vm = app01_point.vm
    VM.objects.filter(pk=vm.pk).update(guest_address="127.0.0.1")
    policy = Policy.objects.create(
        name="with-guest-ssh",
        destination=app01_point.destination,
        guest_ssh_user=sshd["user"],
        guest_ssh_port=sshd["port"],
        guest_ssh_private_key=sshd["key"],
    )
    BackupPoint.objects.filter(pk=app01_point.pk).update(policy=policy)
    app01_point.refresh_from_db()
    vm.refresh_from_db()
    session = open_session(point=app01_point, who="tester", origin="cli")
    key = filesystem_of(session, "app01_disk1", "ext4")["key"]
    target = tmp_path / "restored"

    def put(**kwargs) -> Job:
        job = request_put_back(
            session=session,
            vm=vm,
            disk="app01_disk1",
            paths=[f"/{key}/data", f"/{key}/etc/hostname"],
            target=str(target),
            origin="cli",
            **kwargs,
        )
        run_job(job.pk)
        job.refresh_from_db()
        return job

    try:
        job = put()
        assert job.status == Job.Status.SUCCEEDED, job.error
        assert (target / "hostname").read_bytes() == b"app01\n"
        assert sorted(p.name for p in (target / "data").iterdir()) == [f"file{n}.bin" for n in range(4)]
        assert (target / "data" / "file0.bin").read_bytes() == bytes([1]) * 256 * 1024
        assert job.bytes_done == job.bytes_total == 4 * 256 * 1024 + 6

        (target / "hostname").write_bytes(b"changed in the guest\n")
        again = put()
        assert again.status == Job.Status.FAILED
        assert again.error.startswith("5 of the files exist in the guest"), again.error
        assert (target / "hostname").read_bytes() == b"changed in the guest\n", "nothing overwritten unasked"

        forced = put(overwrite=True)
        assert forced.status == Job.Status.SUCCEEDED, forced.error
        assert (target / "hostname").read_bytes() == b"app01\n"
        with pytest.raises(FilesError, match="must be an absolute path"):
            request_put_back(session=session, vm=vm, disk=None, paths=[f"/{key}/etc"], target="tmp/x", origin="cli")
    finally:
        close_session(session, reason="test over")


def test_it_keeps_a_browsed_point_from_retention_and_says_why(app01_point, destination):
    newer = BackupPoint.objects.get(pk=backup(app01_point.vm, destination, type="full").result["point"])
    policy = Policy.objects.create(name="keep-one", destination=destination, keep_last=1)
    BackupPoint.objects.filter(pk__in=[app01_point.pk, newer.pk]).update(policy=policy)
    prune = Job.objects.create(kind="retention", started_by=policy, name="keep-one")
    prune.start()
    session = open_session(point=app01_point, who="alice", origin="page")
    try:
        result = prune_policy(policy=policy, dry_run=False, job=prune)
        assert (result["deleted"], result["busy"]) == ([], [app01_point.vm.pk])
        warnings = "\n".join(prune.events.filter(level="warning").values_list("message", flat=True))
        assert f"Backup {app01_point.pk} is being browsed by browsing session {session.pk} (alice)" in warnings
        assert BackupPoint.objects.kept().filter(pk=app01_point.pk).exists()
    finally:
        close_session(session, reason="test over")
    assert prune_policy(policy=policy, dry_run=False, job=prune)["deleted"] == [app01_point.pk]


@pytest.mark.django_db(transaction=True)  # a process of its own opens the session
def test_it_leaves_nothing_of_a_session_whose_worker_was_killed(app01_point, settings, tmp_path):
    """The process that opened a session killed -9 with its process group (as systemd stops a unit):
    the daemon and mounts it started live on; the node's worker, when it starts, closes the session
    and removes them all."""
    settings.FILES_DIR = tmp_path / "file-sessions"
    opener = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import django, sys, time; django.setup(); from repository.models import BackupPoint; "
            "from recovery.files.sessions import open_session; "
            f"s = open_session(point=BackupPoint.objects.get(pk={app01_point.pk}), who='killed', origin='cli'); "
            "print(s.pk, flush=True); time.sleep(600)",
        ],
        env=worker_env(FILES_DIR=str(settings.FILES_DIR)),
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        session = FileSession.objects.get(pk=int(opener.stdout.readline()))
    finally:
        os.killpg(opener.pid, signal.SIGKILL)
        opener.wait()
    assert session.status == FileSession.Status.OPEN and leftovers(session) != []
    assert run_node_hooks(ON_JOIN) == []
    session.refresh_from_db()
    assert (session.status, session.close_reason) == (FileSession.Status.CLOSED, "its node restarted")
    assert leftovers(session) == [] and not app01_point.claims.exists()
