"""A soak: many backups of several VMs with every implemented strategy, faults injected at random,
then every point checked.

    .venv/bin/python bench/soak.py [--backups 1000] [--seed 0] [--vms 3] [--database-url postgres://...]

On the demo engine, `--vms` VMs of the soak's own (a small QCOW2 disk with incremental backup and
a small RAW one; some running) are backed up `--backups` times by a policy keeping the last few
points: each time a VM, a strategy among those the registry offers for it, full or incremental,
and, two times in five, a fault in force during the backup, among
  engine_409      a share of the engine's requests answered 409 "Related operation is currently
                  in progress" (the product retries those)
  engine_5xx      a share answered 500 (the engine's fault) or 503 (Apache's page)
  engine_killed   the engine killed -9 at a random moment of the backup, then started again on
                  its state (its VMs' qemu die with it and come back)
  worker_killed   the backup runs in a worker process of its own, killed -9 (alone, or with what
                  it started) at a random moment; the reaper runs as the service's schedule would
  full_dest       the destination (a tmpfs of the soak's own; root only) filled to a few MiB free,
                  before the backup or while it writes
  lost_base       the checkpoint or snapshot the VM's last point kept removed on the engine
  sshd_down       the sshd of every host down
  vm_stopped      the VM (started first if it is down) stopped at a random moment of the backup
  delete_race     a point of the VM deleted (with its dependants) while the backup runs
  prune_race      the policy's retention of the VM run while the backup runs
A VM keeps its strategy for a few backups (a change starts a new chain). Before each backup the
guest writes a few pieces at random; the soak keeps what each disk holds
(the reference), so every point can be compared with what the guest had written at its backup.
Between backups, a point is deleted at random now and then, and the retention jobs the policy's
backups queue are run. The last backup of each VM runs without a fault, as the next night's would,
and closes what the faulted runs left (as the product does).

At the end: every point verified (a verify job), every kept point's images compared with the
reference (qemu-img compare), a sample restored (every 10th point, at least 3) and its disks read
back from the engine and compared; then the leftovers counted: on the engine (snapshots and
checkpoints no kept point records, image transfers and VM backups still open, disks of no VM,
restored VMs), on disk (point directories without a row, `.part` files, consolidation staging
directories, processes still writing into the destination).

Prints backups by outcome, faults by kind, points verified, images and restores compared, and
leftovers; exits 1 when a point is lost (complete in the database, damaged, missing or different
from the reference), a restore differs, anything is left over, or a figure is impossible.
"""

import argparse
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from pathlib import Path

from workspace import ROOT, open_workspace

MiB = 1024**2
DISKS = {"os": (16 * MiB, "cow", "incremental"), "raw": (8 * MiB, "raw", "none")}
FAULTS = [
    "engine_409",
    "engine_5xx",
    "engine_killed",
    "worker_killed",
    "full_dest",
    "lost_base",
    "sshd_down",
    "vm_stopped",
    "delete_race",
    "prune_race",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SoakVM:
    """A VM of the soak's own and the guest's writes to it, in order (the reference of every point)."""

    def __init__(self, row, disks: dict):
        self.row, self.disks = row, disks  # alias -> engine disk
        self.writes: list[tuple[str, int, bytes]] = []
        self.strategy = ""

    @property
    def engine_id(self) -> str:
        return str(self.row.engine_id)

    def content(self, upto: int) -> dict[str, bytearray]:
        """What each disk (by engine id) held after the first `upto` writes."""
        found = {d.id: bytearray(DISKS[alias][0]) for alias, d in self.disks.items()}
        for disk_id, offset, data in self.writes[:upto]:
            found[disk_id][offset : offset + len(data)] = data
        return found


class Soak:
    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.rng = random.Random(args.seed)
        self.outcomes: Counter = Counter()
        self.faults: Counter = Counter()
        self.fault_errors: dict[str, Counter] = defaultdict(Counter)
        self.unexpected: list[str] = []
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []
        self.point_writes: dict[int, int] = {}  # point pk -> how many of its VM's writes it holds
        self.bases: dict[str, str] = {}  # engine id of a point's base -> "backup N (strategy, type)"
        self.timings: dict[str, float] = {}
        self.stale_checkpoints: Counter = Counter()
        self.refused_writes: Counter = Counter()
        self.durations: list[float] = []
        self.deleted_by_soak = 0
        self.engine_requests_failed: Counter = Counter()

    # ----- set-up -------------------------------------------------------------------------

    def start(self) -> None:
        from django.conf import settings

        from core.ssh import site_key
        from inventory.models import Manager
        from inventory.sync import sync_manager
        from ovirtsim import Simulator
        from policies.models import Policy
        from repository.models import BackupDestination

        self.sim = Simulator(self.work / "engine", seed="demo", port=free_port()).start()
        # This node serves the staging share the demo's export domain is on (the export domain strategy).
        settings.EXPORT_STAGING_DIR = self.sim.state_dir / "exports"
        self.manager = Manager.objects.create(name="soak", **self.sim.manager_fields)
        sync_manager(self.manager)
        # The SSH transfer logs in to the hosts with the site's key, as an administrator installs it.
        self.sim.authorize_key(site_key().public_key)
        repo = self.work / "repo"
        repo.mkdir()
        self.tmpfs = False
        if os.geteuid() == 0:
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "soak", str(repo)], capture_output=True)
            self.tmpfs = mounted.returncode == 0
        if not self.tmpfs:
            self.skipped["full_dest"] = "needs root to mount a destination of its own (tmpfs) to fill"
        self.destination = BackupDestination.objects.create(name="soak", path=str(repo))
        with self.sim.connect() as conn:
            ids = [self.make_vm(conn, n, running=n % 2 == 0) for n in range(self.args.vms)]
        sync_manager(self.manager)
        from inventory.models import VM

        self.vms = []
        with self.sim.connect() as conn:
            for vm_id in ids:
                self.vms.append(SoakVM(VM.objects.get(engine_id=vm_id), self.engine_disks(conn, vm_id)))
        self.policy = Policy.objects.create(
            name="soak", destination=self.destination, keep_last=3, schedule="0 1 * * *", full_every_runs=0
        )
        self.policy.vms.set([v.row for v in self.vms])
        self.floating_before = self.floating_disks()

    def make_vm(self, conn, n: int, *, running: bool) -> str:
        import ovirtsdk4.types as types

        from tests.ovirtsim.helpers import add_disk, wait_for

        name = f"soak{n:02d}"
        vms = conn.system_service().vms_service()
        vm = vms.add(types.Vm(name=name, cluster=types.Cluster(name="Production")))
        service = vms.vm_service(vm.id)
        for alias, (size, fmt, backup) in DISKS.items():
            disk = add_disk(conn, name=f"{name}_{alias}", size=size, fmt=fmt, sd_name="data-nfs", backup=backup)
            service.disk_attachments_service().add(
                types.DiskAttachment(
                    disk=types.Disk(id=disk.id),
                    interface=types.DiskInterface.VIRTIO_SCSI,
                    bootable=alias == "os",
                    active=True,
                )
            )
        if running:
            service.start()
            wait_for(lambda: service.get().status == types.VmStatus.UP, timeout=60, what=f"{name} to run")
        return vm.id

    def engine_disks(self, conn, vm_id: str) -> dict:
        service = conn.system_service().vms_service().vm_service(vm_id)
        found = {}
        for attachment in service.disk_attachments_service().list(follow="disk"):
            found[attachment.disk.alias.split("_", 1)[1]] = attachment.disk
        return found

    def stop(self) -> None:
        self.sim.stop()
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.work / "repo")], capture_output=True)

    # ----- one backup ---------------------------------------------------------------------

    def usable_strategies(self, vm: SoakVM) -> list[str]:
        from strategies.registry import strategy_options

        return [name for name, _, reason in strategy_options(vm.row) if not reason]

    def guest_writes(self, vm: SoakVM) -> None:
        for _ in range(self.rng.randint(0, 3)):
            alias = self.rng.choice(list(vm.disks))
            size = DISKS[alias][0]
            length = self.rng.choice([4096, 64 * 1024, MiB])
            offset = self.rng.randrange(0, size - length + 1, 4096)
            data = self.rng.randbytes(length)
            try:
                self.sim.guest_write(vm.disks[alias].id, offset, data)
            except RuntimeError as e:
                # Refused, as a disk locked by what a failed run left open: the guest wrote nothing.
                self.refused_writes[first_words(re.sub(UUID, "ID", str(e)), 160)] += 1
                continue
            vm.writes.append((vm.disks[alias].id, offset, data))

    def iteration(self, n: int, vm: SoakVM, *, closing: bool) -> None:
        from jobs.models import Job
        from jobs.runner import run_job
        from strategies.backup import request_backup

        self.guest_writes(vm)
        # A VM keeps its strategy for a while, as under a policy, so chains grow and retention merges
        # them; now and then it changes (a new policy, a backup by hand), which starts a new chain.
        usable = self.usable_strategies(vm)
        if vm.strategy not in usable or self.rng.random() < 0.25:
            vm.strategy = self.rng.choice(usable)
        strategy = vm.strategy
        kind = self.rng.choice(["full", "incremental", "incremental", "auto"])
        fault = None
        allowed = [f for f in self.args.faults if f not in self.skipped]
        if not closing and allowed and self.rng.random() < self.args.fault_share:
            fault = self.rng.choice(allowed)
        writes = len(vm.writes)
        started = time.monotonic()
        try:
            job = request_backup(
                vm=vm.row, origin="cli", destination=self.destination, policy=self.policy, type=kind, strategy=strategy
            )
        except ValueError as e:  # refused (another backup of the VM still active): nothing ran
            self.outcomes["failed unexpectedly"] += 1
            self.unexpected.append(f"backup {n} ({strategy}, {kind}) of {vm.row.name}: refused: {e}")
            print(f"{n:5d} {vm.row.name} {strategy:15s} {kind:11s} {'-':14s} refused: {first_words(str(e), 90)}")
            return
        try:
            self.with_fault(fault, vm, job)
        except Exception as e:  # the fault's own set-up failed: said, and the backup runs without it
            self.notes.append(f"backup {n}: injecting {fault} failed: {type(e).__name__}: {first_words(str(e), 200)}")
        self.ensure_engine()
        self.sim.clear_faults()
        if Job.objects.get(pk=job.pk).status == Job.Status.QUEUED:
            run_job(job.pk)
        self.after_backup()
        job.refresh_from_db()
        self.durations.append(time.monotonic() - started)
        if job.status == Job.Status.SUCCEEDED:
            self.outcomes["succeeded"] += 1
            self.point_writes[job.result["point"]] = writes
            self.note_bases()  # a delete racing the backup may have removed it already: noted there
        elif fault is not None:
            self.outcomes["failed under a fault"] += 1
            self.fault_errors[fault][first_words(job.error)] += 1
        else:
            self.outcomes["failed unexpectedly"] += 1
            self.unexpected.append(f"backup {n} ({strategy}, {kind}) of {vm.row.name}: {job.status}: {job.error}")
        label = fault or "-"
        print(
            f"{n:5d} {vm.row.name} {strategy:15s} {kind:11s} {label:14s} {job.status:9s} "
            f"{self.durations[-1]:5.1f}s {first_words(job.error, 90) if job.error else ''}",
            flush=True,
        )
        # Now and then a person deletes a backup (with the backups built on it).
        if not closing and self.rng.random() < 0.05:
            self.delete_a_point(vm)

    def with_fault(self, fault: str | None, vm: SoakVM, job) -> None:
        from jobs.runner import run_job

        if fault is not None:
            self.faults[fault] += 1
        if fault is None:
            run_job(job.pk)
        elif fault in ("engine_409", "engine_5xx"):
            status = 409 if fault == "engine_409" else self.rng.choice([500, 503])
            methods = ["POST", "PUT", "DELETE"] if status == 409 else ["GET", "POST", "PUT", "DELETE"]
            rate = 0.15 if status == 409 else 0.05
            self.sim.set_faults(
                fail_requests={"rate": rate, "status": status, "methods": methods, "seed": self.rng.randrange(1 << 30)}
            )
            before = self.sim.failed_requests()
            try:
                run_job(job.pk)
            finally:
                for status, count in self.sim.failed_requests().items():
                    self.engine_requests_failed[status] += count - before.get(status, 0)
        elif fault == "engine_killed":
            self.run_doing_meanwhile(job, self.kill_engine)
        elif fault == "worker_killed":
            self.run_in_killed_worker(job)
        elif fault == "full_dest":
            # Full before the backup starts (its free-space check refuses it), or filling up while
            # it writes (the write itself fails).
            balloon = Path(self.destination.path) / ".soak-balloon"
            leave = self.rng.randint(0, 20) * MiB
            try:
                if self.rng.random() < 0.5:
                    fill(balloon, leave)
                    run_job(job.pk)
                else:
                    self.run_doing_meanwhile(job, lambda: fill(balloon, leave))
            finally:
                balloon.unlink(missing_ok=True)
        elif fault == "lost_base":
            self.lose_base(vm)
            run_job(job.pk)
        elif fault == "sshd_down":
            hosts = [h["name"] for h in self.sim.hosts()]
            for host in hosts:
                self.sim.set_host_faults(host, sshd_down=True)
            try:
                run_job(job.pk)
            finally:
                for host in hosts:
                    self.sim.set_host_faults(host, sshd_down=False)
        elif fault == "vm_stopped":
            self.power(vm, up=True)
            self.run_doing_meanwhile(job, lambda: self.power(vm, up=False, wait=False))
        elif fault == "delete_race":
            self.run_doing_meanwhile(job, lambda: self.delete_a_point(vm, racing=True))
        elif fault == "prune_race":
            self.run_doing_meanwhile(job, lambda: self.prune(vm))

    def run_doing_meanwhile(self, job, action) -> None:
        """Run the job here while another thread does `action()` at a random moment of it (from its
        start to about its usual length), or at its end if it ends first."""
        from django.db import connections

        from jobs.models import Job
        from jobs.runner import run_job

        usual = sorted(self.durations)[len(self.durations) // 2] if self.durations else 2.0
        delay = self.rng.uniform(0, usual)
        errors = []

        def act():
            try:
                deadline = time.monotonic() + 120
                while Job.objects.get(pk=job.pk).status == Job.Status.QUEUED and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(delay)
                action()
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
            finally:
                connections.close_all()

        watcher = threading.Thread(target=act)
        watcher.start()
        run_job(job.pk)
        watcher.join()
        for error in errors:
            self.notes.append(f"job {job.pk}: the fault's action failed: {first_words(error, 200)}")

    def ensure_engine(self) -> None:
        """The engine running again, should a restart in a fault's thread have failed."""
        if not self.sim.running:
            self.notes.append("the engine was not running after a fault: started again")
            self.sim.stop()
            self.sim.start()

    def kill_engine(self) -> None:
        self.sim.kill()
        time.sleep(self.rng.uniform(0, 1))
        self.sim.start()

    def run_in_killed_worker(self, job) -> None:
        """The job in a worker process of its own, killed -9 at a random moment (alone, as the OOM
        killer picks one process, or with what it started, as systemd stops a unit); then the reaper."""
        from jobs.models import Job
        from jobs.tasks import reap_abandoned_jobs

        worker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import django; django.setup(); from jobs.runner import run_job; run_job({job.pk})",
            ],
            env=os.environ | {"PYTHONPATH": str(ROOT)},
            cwd=ROOT,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        usual = sorted(self.durations)[len(self.durations) // 2] if self.durations else 2.0
        deadline = time.monotonic() + 120
        while Job.objects.get(pk=job.pk).status == Job.Status.QUEUED and worker.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        time.sleep(self.rng.uniform(0, usual))
        if worker.poll() is None:
            if self.rng.random() < 0.5:
                os.kill(worker.pid, signal.SIGKILL)
            else:
                os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        reap_abandoned_jobs(timeout_seconds=0)

    def power(self, vm: SoakVM, *, up: bool, wait: bool = True) -> None:
        import ovirtsdk4.types as types

        from ovirt.polling import retry_engine
        from tests.helpers import settled
        from tests.ovirtsim.helpers import wait_for

        wanted = types.VmStatus.UP if up else types.VmStatus.DOWN
        with self.sim.connect() as conn:
            service = conn.system_service().vms_service().vm_service(vm.engine_id)
            if service.get().status == wanted:
                return
            if up:
                # A snapshot the last backup removed may still be merging: the engine refuses to run
                # a VM whose disks are locked.
                wait_for(lambda: settled(conn, vm.engine_id), timeout=120, what=f"{vm.row.name}'s disks")
            retry_engine(service.start if up else service.stop, what="power")
            if wait:
                wait_for(lambda: service.get().status == wanted, timeout=60, what=f"{vm.row.name} {wanted.value}")

    def lose_base(self, vm: SoakVM) -> None:
        """The base the VM's newest point kept, removed on the engine behind the product's back."""
        from ovirt.backups import checkpoints, remove_checkpoint
        from ovirt.snapshots import remove_snapshot
        from repository.models import BackupPoint

        point = BackupPoint.objects.kept().with_base().filter(vm=vm.row).order_by("-started").first()
        if point is None:
            return
        with self.sim.connect() as conn:
            if point.base_kind == BackupPoint.BaseKind.CHECKPOINT:
                # The engine removes the oldest checkpoint only: those before it go first.
                for checkpoint in checkpoints(conn, vm.engine_id):
                    remove_checkpoint(conn, vm.engine_id, checkpoint.id)
                    if checkpoint.id == point.base_id:
                        break
            else:
                remove_snapshot(conn, vm.engine_id, point.base_id)

    def note_bases(self) -> None:
        """Remember what the kept points keep on the engine, before anything may delete them."""
        from repository.models import BackupPoint

        for pk, strategy, kind, base_id in (
            BackupPoint.objects.kept().with_base().values_list("pk", "strategy", "type", "base_id")
        ):
            self.bases.setdefault(base_id, f"backup {pk} ({strategy}, {kind})")

    def delete_a_point(self, vm: SoakVM, *, racing: bool = False) -> None:
        from repository.models import BackupPoint
        from repository.retention import delete_backup

        self.note_bases()
        points = list(BackupPoint.objects.kept().filter(vm=vm.row).order_by("started"))
        if not points:
            return
        point = self.rng.choice(points)
        try:
            self.deleted_by_soak += len(delete_backup(point=point, with_dependants=True))
        except ValueError as e:  # refused while a backup builds on it: what a person is told
            if not racing:
                self.notes.append(f"deleting backup {point.pk} refused: {first_words(str(e), 200)}")

    def prune(self, vm: SoakVM) -> None:
        from repository.retention import prune_policy

        self.note_bases()
        prune_policy(policy=self.policy, vm=vm.row, dry_run=False)

    def after_backup(self) -> None:
        """What the service does between jobs: the reaper, and the retention jobs backups queued."""
        from jobs.models import Job
        from jobs.runner import run_job
        from jobs.tasks import reap_abandoned_jobs

        reap_abandoned_jobs(timeout_seconds=0)
        self.note_bases()
        for job in Job.objects.queued().filter(kind="retention").order_by("pk"):
            run_job(job.pk)
            job.refresh_from_db()
            if job.status != Job.Status.SUCCEEDED:
                self.notes.append(f"retention job {job.pk}: {job.status}: {first_words(job.error, 200)}")

    # ----- the checks ---------------------------------------------------------------------

    def run(self) -> int:
        n = self.args.backups
        closing = min(len(self.vms), n)
        started = time.monotonic()
        for i in range(n - closing):
            self.iteration(i + 1, self.rng.choice(self.vms), closing=False)
        for i, vm in enumerate(self.vms[:closing]):
            self.iteration(n - closing + i + 1, vm, closing=True)
        self.timings["backups"] = time.monotonic() - started
        return self.check()

    def check(self) -> int:
        from jobs.models import Job
        from jobs.runner import run_job
        from repository.models import BackupPoint
        from repository.verify import request_verify

        if self.args.damage_one:
            self.damage_one()
        started = time.monotonic()
        complete_before = set(
            BackupPoint.objects.filter(status=BackupPoint.Status.COMPLETE).values_list("pk", flat=True)
        )
        verify = request_verify(origin="cli")
        run_job(verify.pk)
        verify.refresh_from_db()
        kept = list(BackupPoint.objects.kept().select_related("vm", "destination").order_by("started"))
        sound = [p for p in kept if p.status == BackupPoint.Status.COMPLETE]
        damaged = [p for p in kept if p.status == BackupPoint.Status.DAMAGED]
        gone = sorted(complete_before - {p.pk for p in kept})
        lost = {p.pk: f"damaged: {first_words(p.damage, 200)}" for p in damaged if p.pk in complete_before}
        for pk in gone:
            lost[pk] = "complete before the verify, gone after it"

        vms = {v.row.pk: v for v in self.vms}
        compared, differ = 0, []
        for point in sound:
            problem = self.compare_images(point, vms[point.vm_id])
            compared += 1
            if problem:
                differ.append(point.pk)
                lost[point.pk] = problem

        sample = sound[:: max(1, self.args.restore_every)]
        if len(sample) < 3:
            sample = sound[:3]
        self.timings["verify and compare"] = time.monotonic() - started
        started = time.monotonic()
        restores = Counter()
        for point in sample:
            problem = self.restore_and_compare(point, vms[point.vm_id])
            restores["equal" if not problem else "different"] += 1
            if problem:
                self.notes.append(f"restore of backup {point.pk}: {problem}")

        self.timings["restores"] = time.monotonic() - started
        engine_left = self.engine_leftovers(kept)
        disk_left = self.disk_leftovers(kept)
        jobs_left = Job.objects.active().count()

        total = sum(self.outcomes.values())
        print()
        print(
            f"soak: {self.args.backups} backups, seed {self.args.seed}, {len(self.vms)} VMs, "
            f"strategies {', '.join(sorted({s for v in self.vms for s in self.usable_strategies(v)}))}"
        )
        print("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in self.timings.items()))
        print("backups by outcome: " + ", ".join(f"{k} {self.outcomes[k]}" for k in OUTCOMES))
        print("faults by kind: " + (", ".join(f"{k} {self.faults[k]}" for k in FAULTS if self.faults[k]) or "none"))
        if self.engine_requests_failed:
            print(
                "engine requests refused by the faults: "
                + ", ".join(f"{status} x{count}" for status, count in sorted(self.engine_requests_failed.items()))
            )
        for fault, reason in self.skipped.items():
            print(f"fault {fault} skipped: {reason}")
        print(
            f"points verified: {len(kept)} (sound {len(sound)}, damaged {len(damaged)}); deleted by the soak "
            f"{self.deleted_by_soak}; verify job {verify.status}"
        )
        print(
            f"images compared with the reference: {compared} (equal {compared - len(differ)}, different {len(differ)})"
        )
        print(
            f"restores compared: {sum(restores.values())} "
            f"(equal {restores['equal']}, different {restores['different']})"
        )
        print(
            f"leftovers: engine {sum(engine_left.values())}, disk {sum(disk_left.values())}, jobs still active "
            f"{jobs_left}"
        )
        for what, count in {**engine_left, **disk_left}.items():
            if count:
                print(f"  left: {what} x{count}")
        if self.stale_checkpoints:
            print(
                "checkpoints of deleted points still on the engine (not counted: the VM's next CBT backup removes "
                "them): " + ", ".join(f"{vm} {count}" for vm, count in sorted(self.stale_checkpoints.items()))
            )
        print(f"points lost: {len(lost)}")
        for pk, why in sorted(lost.items()):
            print(f"  backup {pk}: {why}")
        for fault, errors in sorted(self.fault_errors.items()):
            for error, count in errors.most_common():
                print(f"  failed under {fault} x{count}: {error}")
        for line in self.unexpected:
            print(f"  unexpected: {line}")
        for message, count in self.refused_writes.most_common():
            print(f"  guest write refused x{count}: {message}")
        for message, count in self.warnings().most_common(12):
            print(f"  warned x{count}: {message}")
        for note in self.notes:
            print(f"  note: {note}")

        impossible = []
        if total != self.args.backups:
            impossible.append(f"{total} outcomes for {self.args.backups} backups")
        if self.outcomes["succeeded"] > total:
            impossible.append("more successes than backups")
        if len(kept) > self.outcomes["succeeded"]:
            impossible.append(f"{len(kept)} points kept from {self.outcomes['succeeded']} successful backups")
        if sum(self.faults.values()) > self.args.backups:
            impossible.append("more faults than backups")
        if sum(restores.values()) != len(sample) or compared != len(sound):
            impossible.append("not every point sampled was compared")
        for line in impossible:
            print(f"impossible figure: {line}")
        corrupt = restores["different"]
        leftovers = sum(engine_left.values()) + sum(disk_left.values()) + jobs_left
        failed = bool(lost or corrupt or leftovers or impossible)
        print(
            f"result: {'FAIL' if failed else 'PASS'} (points lost {len(lost)}, corrupt restores {corrupt}, "
            f"leftovers {leftovers})"
        )
        return 1 if failed else 0

    def warnings(self) -> Counter:
        """The warnings and errors the soak's backup jobs logged, alike ones together (ids and numbers
        put as N): what went wrong on the way even when the backup succeeded."""
        from jobs.models import JobEvent

        found = Counter()
        events = JobEvent.objects.filter(job__kind="backup", level__in=["warning", "error"])
        for message in events.values_list("message", flat=True):
            found[first_words(re.sub(rf"{UUID}|\d+", "N", message), 200)] += 1
        return found

    def damage_one(self) -> None:
        """Overwrite 4 KiB in the middle of the newest point's first image, as a failing disk would
        (`--damage-one`: to see the checks catch it)."""
        from repository.models import BackupPoint

        point = BackupPoint.objects.kept().order_by("-started").first()
        if point is None:
            return
        record = point.disks.order_by("pk").first()
        path = Path(point.destination.path) / record.file
        with open(path, "r+b") as f:
            f.seek(path.stat().st_size // 2)
            f.write(b"\xa5" * 4096)
        print(f"damaged backup {point.pk}: 4 KiB overwritten in {record.file}")

    def reference_files(self, point, vm: SoakVM, tag: str) -> dict[str, Path]:
        """What the guest had written at the point's backup, as raw files (disk engine id -> file)."""
        out = {}
        for disk_id, data in vm.content(self.point_writes.get(point.pk, -1)).items():
            path = self.work / f"ref-{tag}-{disk_id}.raw"
            path.write_bytes(bytes(data))
            out[disk_id] = path
        return out

    def compare_images(self, point, vm: SoakVM) -> str:
        if point.pk not in self.point_writes:
            return "no backup job of the soak made it"
        files = {
            str(r.disk.engine_id): Path(point.destination.path) / r.file for r in point.disks.select_related("disk")
        }
        reference = self.reference_files(point, vm, "point")
        try:
            if set(files) != set(reference):
                return f"holds disks {sorted(files)}, the VM has {sorted(reference)}"
            for disk_id, path in files.items():
                if not path.exists():
                    return f"its image {path.name} is missing"
                problem = differs(path, reference[disk_id])
                if problem:
                    return f"its image of disk {disk_id} {problem}"
            return ""
        finally:
            for path in reference.values():
                path.unlink()

    def restore_and_compare(self, point, vm: SoakVM) -> str:
        from jobs.models import Job
        from jobs.runner import run_job
        from ovirt.vms import remove_vm
        from recovery.restore import request_restore
        from tests.ovirtsim.helpers import download

        name = f"soak-restore-{point.pk}"
        job = request_restore(point=point, origin="cli", name=name)
        run_job(job.pk)
        job.refresh_from_db()
        if job.status != Job.Status.SUCCEEDED:
            return f"the restore failed: {job.error}"
        reference = self.reference_files(point, vm, "restore")
        by_alias = {d.alias.split("_", 1)[1]: d.id for d in vm.disks.values()}
        with self.sim.connect() as conn:
            vm_id = job.result["vm_id"]
            try:
                restored = self.engine_disks(conn, vm_id)
                if set(restored) != set(by_alias):
                    return f"the restored VM has disks {sorted(restored)}"
                for alias, disk in restored.items():
                    out = self.work / f"restored-{alias}.raw"
                    download(conn, self.sim.ca_file, out, disk_id=disk.id, fmt="raw", out_fmt="raw")
                    problem = differs(out, reference[by_alias[alias]])
                    out.unlink()
                    if problem:
                        return f"restored disk {alias} {problem}"
                return ""
            finally:
                remove_vm(conn, vm_id)
                for path in reference.values():
                    path.unlink()

    def floating_disks(self) -> set[str]:
        with self.sim.connect() as conn:
            system = conn.system_service()
            attached = {
                a.disk.id
                for vm in system.vms_service().list()
                for a in system.vms_service().vm_service(vm.id).disk_attachments_service().list()
            }
            return {d.id for d in system.disks_service().list()} - attached

    def engine_leftovers(self, kept) -> Counter:
        import ovirtsdk4.types as types

        from ovirt.backups import checkpoints
        from tests.helpers import settled
        from tests.ovirtsim.helpers import wait_for

        bases = {p.base_id for p in kept if p.base_id}
        left = Counter()
        with self.sim.connect() as conn:
            system = conn.system_service()
            for vm in self.vms:
                wait_for(lambda vm=vm: settled(conn, vm.engine_id), timeout=120, what="the engine's merges")
                service = system.vms_service().vm_service(vm.engine_id)
                for snap in service.snapshots_service().list():
                    if snap.snapshot_type == types.SnapshotType.REGULAR and snap.id not in bases:
                        left[f"snapshot of {vm.row.name} no kept point records ({self.whose(snap.id)})"] += 1
                for checkpoint in checkpoints(conn, vm.engine_id):
                    if checkpoint.id in bases:
                        continue
                    if checkpoint.id in self.bases:
                        # A deleted point's: the engine removes checkpoints oldest first only, and the
                        # product removes them at the VM's next CBT backup, not when the point goes.
                        self.stale_checkpoints[vm.row.name] += 1
                    else:
                        left[f"checkpoint of {vm.row.name} no point of the soak kept"] += 1
                for backup in service.backups_service().list():
                    if backup.phase not in (types.BackupPhase.SUCCEEDED, types.BackupPhase.FAILED):
                        left[f"VM backup still {backup.phase.value}"] += 1
                for disk in self.engine_disks(conn, vm.engine_id).values():
                    if disk.status != types.DiskStatus.OK:
                        left[f"disk {disk.status.value}"] += 1
            for transfer in system.image_transfers_service().list():
                if transfer.phase not in (
                    types.ImageTransferPhase.FINISHED_SUCCESS,
                    types.ImageTransferPhase.FINISHED_FAILURE,
                ):
                    left[f"image transfer {transfer.phase.value}"] += 1
            for vm in system.vms_service().list():
                if vm.name.startswith("soak-restore-"):
                    left["restored VM"] += 1
        floating = self.floating_disks() - self.floating_before
        if floating:
            left["disk of no VM"] += len(floating)
        return left

    def whose(self, base_id: str) -> str:
        """Which point kept this base (gone since), or that none of the soak's did."""
        if base_id in self.bases:
            return f"kept by {self.bases[base_id]}, no longer kept"
        return "no point of the soak kept it"

    def disk_leftovers(self, kept) -> Counter:
        from tests.helpers import processes_using

        root = Path(self.destination.path)
        wanted = {(str(p.vm.engine_id), str(p.uuid)) for p in kept}
        left = Counter()
        for vm_dir in root.iterdir():
            if vm_dir.name == "lost+found":
                continue
            if not vm_dir.is_dir():
                if vm_dir.name != ".soak-balloon":
                    left[f"file {vm_dir.name} in the destination"] += 1
                continue
            for entry in vm_dir.iterdir():
                if entry.name == ".retention.lock":
                    continue
                if entry.name.endswith(".merge"):
                    left["consolidation staging directory"] += 1
                elif (vm_dir.name, entry.name) not in wanted:
                    left["point directory without a kept row"] += 1
        left[".part file"] = sum(1 for _ in root.rglob("*.part"))
        left["process writing into the destination"] = len(processes_using(str(root)))
        return +left


OUTCOMES = ["succeeded", "failed under a fault", "failed unexpectedly"]
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def fill(balloon: Path, leave: int) -> None:
    """Take the destination's free space but `leave` bytes, in a file of its own."""
    free = shutil.disk_usage(balloon.parent).free
    with open(balloon, "ab") as f:
        os.posix_fallocate(f.fileno(), f.tell(), max(1, free - leave))


def differs(image: Path, reference: Path) -> str:
    """What is wrong with the image against the raw reference ("" when the guest sees the same)."""
    result = subprocess.run(["qemu-img", "compare", str(image), str(reference)], capture_output=True, text=True)
    if result.returncode == 0:
        return ""
    if result.returncode == 1:
        return "differs from what the guest had written"
    return f"cannot be compared: {first_words(result.stderr, 200)}"


def first_words(text: str, length: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= length else text[: length - 1] + "…"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backups", type=int, default=1000, help="backups to run (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="the random choices' seed (default 0)")
    parser.add_argument("--vms", type=int, default=3, help="VMs backed up (default 3)")
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"the faults to inject, comma-separated (default: all: {', '.join(FAULTS)})",
    )
    parser.add_argument("--fault-share", type=float, default=0.4, help="share of backups run under a fault (0.4)")
    parser.add_argument(
        "--damage-one", action="store_true", help="overwrite 4 KiB of one stored image before the checks (a self-test)"
    )
    parser.add_argument("--restore-every", type=int, default=10, help="restore every Nth kept point (at least 3)")
    parser.add_argument(
        "--database-url", default="", help="run on this PostgreSQL database (emptied first) rather than SQLite"
    )
    args = parser.parse_args()
    if args.backups < 1 or args.vms < 1:
        parser.error("--backups and --vms must be at least 1")
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in args.faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown fault {unknown[0]}; there are: {', '.join(FAULTS)}")
    if not 0 <= args.fault_share <= 1:
        parser.error("--fault-share must be between 0 and 1")
    work = open_workspace("bench-soak-", database_url=args.database_url)
    logging.getLogger("django-q").setLevel(logging.WARNING)  # "Enqueued [backup] 12" per job
    # The data plane's tools (qemu-nbd) say on stderr what is not a problem ("Meta context
    # qemu:allocation-depth is not available"): their chatter goes to a file, shown on failure.
    chatter = work / "stderr.log"
    saved_stderr = os.dup(2)
    with open(chatter, "wb") as f:
        os.dup2(f.fileno(), 2)
    sys.stderr = open(saved_stderr, "w", closefd=False)  # noqa: SIM115 (the process's own stderr)
    soak = Soak(args, work)
    result = 1
    started = time.monotonic()
    try:
        soak.start()
        soak.timings["set-up"] = time.monotonic() - started
        result = soak.run()
    except Exception:
        traceback.print_exc(file=sys.stdout)
        print("result: FAIL (the soak itself stopped)")
    finally:
        if getattr(soak, "sim", None) is not None:
            soak.stop()
        print(f"took {time.monotonic() - started:.0f}s", flush=True)
        os.dup2(saved_stderr, 2)
        if result:
            tail = chatter.read_text(errors="replace").splitlines()[-20:]
            print("the end of the tools' stderr:\n" + "\n".join(tail))
    return result


if __name__ == "__main__":
    sys.exit(main())
