"""Files of a browsing session put back into a running VM over the guest SSH that the policy's
pre/post snapshot commands use: a job on the session's node, with progress, never overwriting a
file of the guest unless asked.

Without a target folder each item goes back to its path inside its filesystem, taken as the
guest's path: right for the root filesystem; for another (/boot, an EFI partition, a data LV
mounted elsewhere in the guest) give the folder it is mounted on, or any folder, as the target.
"""

import posixpath
import shlex
import time
from urllib.parse import quote, unquote

from django.utils import timezone

from inventory.models import VM
from jobs.errors import JobError
from jobs.models import Job
from jobs.placement import Placement
from jobs.runner import enqueue
from recovery.files import tree as trees
from recovery.files.browse import TOUCH_EVERY, place
from recovery.files.errors import FilesError
from recovery.files.sessions import PUT_BACK, tree_of, usable
from recovery.models import FileSession
from strategies.guest import connect_guest

CONFLICTS_SHOWN = 5


def request_put_back(
    *,
    session: FileSession,
    vm: VM,
    disk: str | None,
    paths: list[str],
    target: str = "",
    overwrite: bool = False,
    origin: str,
    owner=None,
) -> Job:
    """Queue the copy of `paths` (files or folders of one disk's filesystems) into `vm`."""
    if not paths:
        raise FilesError("Choose the files or folders to put back.")
    target = target.strip()
    if target and (not target.startswith("/") or "\0" in target or ".." in target.split("/")):
        raise FilesError(f"The target folder {target!r} must be an absolute path in the guest, without '..'.")
    chosen = [place(session, disk=disk, path=path) for path in paths]
    for where in chosen:
        if where.fs is None or not where.parts:
            raise FilesError(f"{where.path} is a whole filesystem: choose folders or files in it.")
        tree = tree_of(session, where.disk, where.fs)
        try:
            tree.stat(where.parts)  # NotFound, said now
        finally:
            tree.close()
    policy = session.point.policy if session.point is not None else None
    if policy is None:
        raise FilesError(
            f"Backup {session.point_id} was made without a policy, so no guest SSH login is known to put files "
            f"back into {vm.name}: download them instead."
        )
    if not policy.guest_ssh_private_key:
        raise FilesError(
            f"Policy {policy.name} has no guest SSH key (the one its pre/post snapshot commands use): set it to put "
            "files back, or download them."
        )
    job = Job.objects.create(
        kind=PUT_BACK,
        vm=vm,
        manager=vm.manager,
        owner=owner,
        origin=origin,
        name=f"files of backup {session.point_id} -> {vm.name}:{target or 'their places'}",
        params={
            "session": session.pk,
            "disk": chosen[0].disk["disk_id"],
            # Percent-encoded: a guest's name need not be UTF-8, and the database keeps only UTF-8.
            "paths": [quote(where.path, safe="/", errors="surrogateescape") for where in chosen],
            "target": target,
            "overwrite": overwrite,
            "policy": policy.pk,
        },
    )
    return enqueue(job)


def put_back_placement(job: Job) -> Placement:
    """On the node holding the session open (its mounts are that node's)."""
    node = FileSession.objects.filter(pk=job.params.get("session")).values_list("node", flat=True).first() or ""
    return Placement(node=node, says=f"holds browsing session {job.params.get('session')} open")


def run_put_back(*, job: Job) -> dict:
    params = job.params
    session = FileSession.objects.select_related("point__policy").filter(pk=params["session"]).first()
    if session is None:
        raise JobError("The browsing session was removed: open the backup again.")
    try:
        paths = [unquote(path, errors="surrogateescape") for path in params["paths"]]
        items = [place(session, disk=params["disk"], path=path) for path in paths]
    except FilesError as e:
        raise JobError(f"{e} Nothing was put back.") from None
    dest = params["target"] or "/"
    plan = []  # (tree, parts, strip): each item named from its own name (target) or its full path
    files, total = [], 0
    try:
        for where in items:
            tree = tree_of(session, where.disk, where.fs)
            strip = len(where.parts) - 1 if params["target"] else 0
            plan.append((tree, where.parts, strip))
            for n, (member_parts, entry) in enumerate(trees.walk(tree, where.parts)):
                if n % 1000 == 999:
                    job.check_cancel()  # a folder of millions of files: cancellable while it is counted
                if entry.kind == "file":
                    files.append(posixpath.join(dest, *member_parts[strip:]))
                    total += entry.size
        job.set_progress(0, total)
        return _send(job, session, plan, files, total, dest)
    finally:
        for tree, _, _ in plan:
            tree.close()


def _send(job: Job, session: FileSession, plan: list, files: list[str], total: int, dest: str) -> dict:
    params = job.params
    client, where = connect_guest(vm=job.vm, policy=session.point.policy, job=job, what="Putting files back")
    try:
        if not params["overwrite"]:
            existing = _existing(client, files)
            if existing:
                shown = ", ".join(existing[:CONFLICTS_SHOWN]) + (" ..." if len(existing) > CONFLICTS_SHOWN else "")
                raise JobError(
                    f"{len(existing)} of the files exist in the guest ({shown}): nothing was overwritten or put "
                    "back. Ask to overwrite them, or choose another target folder."
                )
        done, touched = 0, time.monotonic()

        def sent(n: int) -> None:
            nonlocal done, touched
            done += n
            job.set_progress(done, total)
            if time.monotonic() - touched > TOUCH_EVERY:
                # A copy longer than the idle timeout must not have its session closed under it.
                usable(session)
                touched = time.monotonic()

        keep = "" if params["overwrite"] else " --keep-old-files"
        command = f"mkdir -p {shlex.quote(dest)} && tar -x -p --numeric-owner{keep} -f - -C {shlex.quote(dest)}"
        job.log("info", f"Putting {len(files)} files ({total} bytes) into {job.vm.name} at {dest} as {where}")
        channel = client.get_transport().open_session()
        channel.set_combine_stderr(True)
        channel.exec_command(command)
        for n, (tree, parts, strip) in enumerate(plan):
            for chunk in trees.stream_tar(tree, parts, prefix=[], strip=strip, end=n == len(plan) - 1, on_data=sent):
                channel.sendall(chunk)
            job.check_cancel()
        channel.shutdown_write()
        output = channel.makefile("rb").read().decode(errors="replace").strip()
        status = channel.recv_exit_status()
    finally:
        client.close()
    if status != 0:
        raise JobError(f"tar in the guest exited with status {status}: {output[-400:] or 'no message'}")
    job.log("info", f"Put back {len(files)} files into {job.vm.name} at {dest}")
    return {"files": len(files), "bytes": total, "target": dest, "finished": timezone.now().isoformat()}


def _existing(client, paths: list[str]) -> list[str]:
    """Which of these paths exist in the guest (as anything, a link included)."""
    if not paths:
        return []
    channel = client.get_transport().open_session()
    channel.exec_command(
        'while IFS= read -r -d \'\' p; do if [ -e "$p" ] || [ -L "$p" ]; then printf \'%s\\0\' "$p"; fi; done'
    )
    channel.sendall(b"".join(p.encode() + b"\0" for p in paths))
    channel.shutdown_write()
    found = channel.makefile("rb").read().decode(errors="replace")
    channel.recv_exit_status()
    return [p for p in found.split("\0") if p]
