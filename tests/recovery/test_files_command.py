"""`manage.py files`: a backup's files listed, copied out and put back from the command line, over a
real backup of the demo's app01; each run closes what it opened."""

import io
import os
import signal

import pytest
from django.core.management import CommandError, call_command

from jobs.models import Job
from policies.models import Policy
from recovery.models import FileSession
from repository.models import BackupPoint
from tests.recovery.files_helpers import DATA, DISK, HOSTNAME, audited, nothing_left


def files(point, *args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("files", str(point.pk), "--disk", DISK, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def ext4_key_of(point) -> str:
    """app01's root filesystem, found by type and label in `ls /`."""
    out, _ = files(point, "ls", "/")
    (line,) = [line for line in out.splitlines() if line.split("\t")[1:3] == ["ext4", "app01"]]
    return line.split("\t")[0]


def test_it_lists_and_copies_files_out_and_leaves_nothing_open(app01_backup, files_dir, tmp_path):
    point = app01_backup
    key = ext4_key_of(point)
    out, _ = files(point, "ls", "/")
    assert " MiB\t" in out and "used\tthe whole disk (no partition table)" in out

    out, err = files(point, "ls", f"/{key}/data")
    lines = out.splitlines()
    assert [line.split()[-1] for line in lines] == sorted(DATA)
    assert lines[0].startswith("-rw-r--r--         0:0  256.0 KiB  ")
    assert err.strip() == "entries 1-4 of 4 (page 1 of 1)"
    assert files(point, "ls", f"/{key}", "--search", "ETC")[0].split()[-1] == "etc/"

    # A file as DIR/NAME; not over an existing one unless asked.
    into = tmp_path / "out"
    into.mkdir()
    out, _ = files(point, "get", f"/{key}/etc/hostname", "--to", str(into))
    assert out.strip() == str(into / "hostname") and (into / "hostname").read_bytes() == HOSTNAME
    (into / "hostname").write_bytes(b"mine\n")
    with pytest.raises(CommandError, match=f"{into / 'hostname'} exists: give --overwrite to replace it."):
        files(point, "get", f"/{key}/etc/hostname", "--to", str(into))
    assert (into / "hostname").read_bytes() == b"mine\n"
    files(point, "get", f"/{key}/etc/hostname", "--to", str(into), "--overwrite")
    assert (into / "hostname").read_bytes() == HOSTNAME

    # A folder: extracted under DIR at its path in the guest; nothing written when a file is in the way.
    out, _ = files(point, "get", f"/{key}/data", "--to", str(into))
    assert out.strip() == f"4 files into {into}"
    assert {p.name: p.read_bytes() for p in (into / "data").iterdir()} == DATA
    (into / "data" / "file1.bin").write_bytes(b"mine\n")
    (into / "data" / "file2.bin").unlink()
    with pytest.raises(CommandError, match=r"3 of the paths exist in .*/data/file0.bin, .*\): nothing was written"):
        files(point, "get", f"/{key}/data", "--to", str(into))
    assert not (into / "data" / "file2.bin").exists() and (into / "data" / "file1.bin").read_bytes() == b"mine\n"
    files(point, "get", f"/{key}/data", "--to", str(into), "--overwrite")
    assert {p.name: p.read_bytes() for p in (into / "data").iterdir()} == DATA
    assert [p.name for p in into.iterdir() if p.name.startswith(".")] == [], "no temporary file left"

    sessions = FileSession.objects.filter(point=point)
    assert sessions.count() == 10 and not sessions.open().exists()
    ended = {"its command (files ls) ended", "its command (files get) ended"}
    assert set(sessions.values_list("close_reason", flat=True)) == ended
    assert nothing_left(files_dir)
    actions = [action for action, _ in audited(source="cli")]
    assert actions.count("files_session_opened") == actions.count("files_session_closed") == 10
    downloads = [d for action, d in audited(source="cli") if action == "files_downloaded"]
    assert downloads[0] | {"session": 0} == {
        "session": 0,
        "disk": DISK,
        "path": f"/{key}/etc/hostname",
        "guest_path": "/etc/hostname",
        "to": str(into),
    }


def test_it_says_what_is_wrong_and_leaves_nothing_open(app01_backup, files_dir, tmp_path):
    point = app01_backup
    with pytest.raises(CommandError, match="^No backup point 999999.$"):
        call_command("files", "999999", "ls", "/")
    key = ext4_key_of(point)
    with pytest.raises(CommandError, match=f"^/etc/nothing does not exist on .* \\(/{key}\\) of disk app01_disk1.$"):
        files(point, "ls", f"/{key}/etc/nothing")
    with pytest.raises(CommandError, match="^Backup .* has no disk nope"):
        call_command("files", str(point.pk), "--disk", "nope", "ls", "/")
    with pytest.raises(CommandError, match=f"^{tmp_path / 'none'} is not a folder here: create it first.$"):
        files(point, "get", f"/{key}/etc/hostname", "--to", str(tmp_path / "none"))
    with pytest.raises(CommandError, match="no VM 'nope'"):
        files(point, "put", f"/{key}/etc/hostname", "--into", "nope")
    with pytest.raises(CommandError, match="made without a policy"):
        files(point, "put", f"/{key}/etc/hostname", "--into", "app01")
    assert not FileSession.objects.open().exists() and nothing_left(files_dir)

    BackupPoint.objects.filter(pk=point.pk).update(status=BackupPoint.Status.DAMAGED, damage="bad checksum")
    with pytest.raises(CommandError, match=f"^Backup {point.pk} is damaged \\(bad checksum\\)"):
        files(point, "ls", "/")


@pytest.mark.django_db(transaction=True)  # the job is enqueued on commit, so --wait sees it run
def test_it_puts_files_back_into_the_vm_and_waits(app01_backup, files_dir, sshd, tmp_path, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    point = app01_backup
    point.vm.guest_address = "127.0.0.1"
    point.vm.save()
    policy = Policy.objects.create(
        name="guest-ssh",
        destination=point.destination,
        guest_ssh_user=sshd["user"],
        guest_ssh_port=sshd["port"],
        guest_ssh_private_key=sshd["key"],
    )
    BackupPoint.objects.filter(pk=point.pk).update(policy=policy)
    key = ext4_key_of(point)
    target = tmp_path / "guest"

    out, _ = files(
        point, "put", f"/{key}/etc/hostname", f"/{key}/data", "--into", "app01", "--target", str(target), "--wait"
    )
    job = Job.objects.get(pk=int(out.split()[0]))
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert (target / "hostname").read_bytes() == HOSTNAME
    assert {p.name: p.read_bytes() for p in (target / "data").iterdir()} == DATA
    assert not FileSession.objects.open().exists() and nothing_left(files_dir)

    with pytest.raises(CommandError, match=r"failed: 1 of the files exist in the guest \(.*/guest/hostname\)"):
        files(
            point,
            "put",
            f"/{key}/etc/hostname",
            f"/{key}/data/file0.bin",
            "--into",
            "app01",
            "--target",
            str(target),
            "--wait",
        )
    (_, put), *_ = [(a, d) for a, d in audited(source="cli") if a == "files_put_back"]
    assert put | {"session": 0} == {
        "session": 0,
        "vm": "app01",
        "paths": [f"/{key}/etc/hostname", f"/{key}/data"],
        "into": str(target),
        "overwrite": False,
        "job": job.pk,
    }

    # Without --wait the session stays open for the job, which reads from it.
    out, err = files(point, "put", f"/{key}/etc/hostname", "--into", "app01", "--target", str(target / "again"))
    (session,) = FileSession.objects.open()
    assert f"Browsing session {session.pk} stays open for job {out.split()[0]}" in err
    assert (target / "again" / "hostname").read_bytes() == HOSTNAME
    from recovery.files.sessions import close_session

    close_session(session, reason="test over")
    assert nothing_left(files_dir)


def test_it_closes_its_session_when_stopped_while_it_waits(app01_backup, files_dir, sshd, monkeypatch):
    """SIGTERM (as Ctrl-C) while --wait follows the put-back job: the job is asked to cancel and the
    session is closed on the way out."""
    from recovery.management.commands import files as command

    point = app01_backup
    policy = Policy.objects.create(name="guest-ssh", destination=point.destination, guest_ssh_private_key=sshd["key"])
    BackupPoint.objects.filter(pk=point.pk).update(policy=policy)
    key = ext4_key_of(point)
    waited = command.wait_for_job

    def stopped_while_waiting(job, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return waited(job, **kwargs)

    monkeypatch.setattr(command, "wait_for_job", stopped_while_waiting)
    with pytest.raises(KeyboardInterrupt):
        files(point, "put", f"/{key}/etc/hostname", "--into", "app01", "--target", "/tmp/x", "--wait")
    (job,) = Job.objects.filter(kind="files_put_back")
    assert job.cancel_requested
    (session,) = FileSession.objects.filter(point=point).exclude(close_reason="its command (files ls) ended")
    assert session.status == FileSession.Status.CLOSED and session.close_reason == "its command (files put) ended"
    assert nothing_left(files_dir)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the command's handler is gone with it"
