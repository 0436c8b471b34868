"""Every page of the site, for the tests that look at all of them (tests/test_pages_*.py).

`build_sample()` makes a small site straight with the ORM (no engine, no jobs run): a manager with
its clusters, hosts, VMs and disks, a destination, a chain of points (a full and two incrementals
with sizes and durations) and a damaged one, failed, skipped and running jobs, a policy with its
alert rule, alerts raised and delivered, audit events, an API token, an instant restore and a
browsing session. `page_urls(sample)` walks the root URLconf: every named pattern outside the API
and the admin is a page, its arguments filled by ARGUMENTS from the sample; a pattern it cannot fill
and that NOT_PAGES does not name fails with its name, so a new page is never left out unnoticed.

To add a page with an argument: add its URL name to ARGUMENTS (name -> the kwargs, from the
sample). To add a state of a page worth looking at (a filter, a tab): add it to EXTRA."""

import datetime
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.contrib.auth import get_user_model
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from core import roles

# Patterns that are not pages: actions answered by POST only (their page is the one they come from),
# and answers that are not HTML. Name -> why.
NOT_PAGES = {
    "logout": "POST only",
    "manager-test": "POST only (htmx)",
    "manager-sync": "POST only",
    "manager-delete": "POST only",
    "proxy-mark": "POST only",
    "proxy-remove": "POST only",
    "policy-run": "POST only",
    "policy-prune": "POST only",
    "job-cancel": "POST only",
    "node-drain": "POST only",
    "point-verify-all": "POST only",
    "point-verify": "POST only",
    "point-files": "POST only (opens a browsing session)",
    "vm-bulk": "POST only (the inventory's bulk actions)",
    "alert-test": "POST only (sends a test alert)",
    "point-prove": "POST only",
    "files-download": "a file, not a page",
    "files-put": "POST only",
    "files-close": "POST only",
    "instant-migrate": "POST only",
    "instant-discard": "POST only",
}
# Patterns that answer a piece of a page (htmx), not a document: the format test reads them, the
# browser test does not (a piece has no title, no landmarks). Name -> where it goes.
FRAGMENTS = {
    "policy-schedule-preview": "the schedule's next runs, in the policy form",
}
SKIPPED_NAMESPACES = ("admin", "api")  # Django's admin and the REST API (its Swagger UI is not ours)


@dataclass
class Sample:
    admin: object
    viewer: object
    manager: object
    host: object
    vm: object
    other_vm: object
    destination: object
    policy: object
    full: object
    incremental: object
    damaged: object
    succeeded_job: object
    failed_job: object
    skipped_job: object
    instant: object
    files_session: object
    node: object
    extra: dict = field(default_factory=dict)


# URL name -> its kwargs from the sample.
ARGUMENTS: dict[str, Callable[[Sample], dict]] = {
    "user-edit": lambda s: {"pk": s.viewer.pk},
    "vm-detail": lambda s: {"pk": s.vm.pk},
    "vm-backup": lambda s: {"pk": s.vm.pk},
    "vm-guest-access": lambda s: {"pk": s.vm.pk},
    "manager-edit": lambda s: {"pk": s.manager.pk},
    "host-edit": lambda s: {"pk": s.host.pk},
    "host-detail": lambda s: {"pk": s.host.pk},
    "point-detail": lambda s: {"pk": s.incremental.pk},
    "policy-detail": lambda s: {"pk": s.policy.pk},
    "policy-edit": lambda s: {"pk": s.policy.pk},
    "policy-prune-preview": lambda s: {"pk": s.policy.pk},
    "alert-edit": lambda s: {"pk": s.policy.pk},
    "job-detail": lambda s: {"pk": s.failed_job.pk},
    "point-delete": lambda s: {"pk": s.full.pk},
    "point-restore": lambda s: {"pk": s.incremental.pk},
    "point-instant": lambda s: {"pk": s.full.pk},
    "files-session": lambda s: {"pk": s.files_session.pk},
    "instant-detail": lambda s: {"pk": s.instant.pk},
    "destination-edit": lambda s: {"pk": s.destination.pk},
}

# More states of pages: label -> (URL name, kwargs from the sample, query string).
EXTRA: dict[str, tuple[str, Callable[[Sample], dict], str]] = {
    "job-detail succeeded": ("job-detail", lambda s: {"pk": s.succeeded_job.pk}, ""),
    "job-detail skipped": ("job-detail", lambda s: {"pk": s.skipped_job.pk}, ""),
    "point-restore full": ("point-restore", lambda s: {"pk": s.full.pk}, ""),
    "point-delete damaged": ("point-delete", lambda s: {"pk": s.damaged.pk}, ""),
    "point-detail damaged": ("point-detail", lambda s: {"pk": s.damaged.pk}, ""),
    "job-list failed": ("job-list", lambda s: {}, "status=failed"),
}


class UnfilledPattern(Exception):
    pass


def page_patterns() -> list[tuple[str, str]]:
    """(URL name, route) of every named pattern of the root URLconf outside the API and the admin."""
    found = []

    def walk(patterns, prefix: str, namespace: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                inner = pattern.namespace or namespace
                if inner in SKIPPED_NAMESPACES:
                    continue
                walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
            elif isinstance(pattern, URLPattern) and pattern.name:
                found.append((pattern.name, prefix + str(pattern.pattern)))

    walk(get_resolver().url_patterns, "", "")
    return found


def page_urls(sample: Sample, *, strict: bool = True) -> dict[str, str]:
    """Label -> URL of every page (and of EXTRA's states). Strict, UnfilledPattern names the patterns
    that need an argument ARGUMENTS does not give; else they are left out."""
    urls, unfilled = {}, []
    for name, route in page_patterns():
        if name in NOT_PAGES:
            continue
        if "<" in route:
            if name not in ARGUMENTS:
                unfilled.append(f"{name} ({route})")
                continue
            urls[name] = reverse(name, kwargs=ARGUMENTS[name](sample))
        else:
            urls[name] = reverse(name)
    if unfilled and strict:
        raise UnfilledPattern(
            "tests/pages.py cannot fill these URL patterns: add them to ARGUMENTS (or to NOT_PAGES if they "
            "are not pages): " + ", ".join(unfilled)
        )
    for label, (name, kwargs, query) in EXTRA.items():
        urls[label] = reverse(name, kwargs=kwargs(sample)) + (f"?{query}" if query else "")
    return urls


def _uuid(n: int) -> str:
    return str(uuid.UUID(int=(0x5A << 64) + n))


def build_sample(*, destination_path: Path, password: str) -> Sample:
    """The sample site, made with the ORM; `destination_path` is an existing empty directory."""
    from alerts.models import AlertDelivery, AlertEvent, AlertRule
    from core.audit import record
    from core.tokens import issue_token
    from inventory.models import VM, Cluster, DataCenter, Disk, Host, Manager, ProxyVM, StorageDomain, Tag
    from jobs.models import Job, JobEvent, Node
    from policies.models import Policy, PolicyRun
    from recovery.models import FileSession, InstantRestore
    from repository.models import BackupDestination, BackupPoint, DiskBackup

    now = timezone.now()
    hours = datetime.timedelta(hours=1)
    User = get_user_model()
    admin = User.objects.create_user(username="ada", password=password)
    roles.set_role(admin, roles.ADMIN)
    viewer = User.objects.create_user(username="vera", password=password)
    roles.set_role(viewer, roles.VIEWER)

    manager = Manager.objects.create(
        name="prod engine",
        api_url="https://engine.example/ovirt-engine/api",
        username="admin@internal",
        password="x",
        status=Manager.Status.OK,
        engine_version="4.5.6",
        last_sync=now - 0.2 * hours,
    )
    dc = DataCenter.objects.create(manager=manager, engine_id=_uuid(1), name="Default")
    cluster = Cluster.objects.create(manager=manager, engine_id=_uuid(2), name="Production", data_center=dc)
    Cluster.objects.create(manager=manager, engine_id=_uuid(3), name="Test", data_center=dc)
    host = Host.objects.create(
        manager=manager,
        engine_id=_uuid(4),
        name="hv01",
        address="hv01.example.com",
        cluster=cluster,
        status=Host.Status.UP,
        vdsm_version="4.50.5",
        libvirt_version="9.0.0",
    )
    Host.objects.create(manager=manager, engine_id=_uuid(5), name="hv02", address="hv02.example.com", cluster=cluster)
    domain = StorageDomain.objects.create(
        manager=manager,
        engine_id=_uuid(6),
        name="data1",
        data_center=dc,
        available_bytes=700 * 2**30,
        used_bytes=300 * 2**30,
    )
    tag = Tag.objects.create(manager=manager, engine_id=_uuid(7), name="nightly")
    vm = VM.objects.create(
        manager=manager,
        engine_id=_uuid(8),
        name="db01",
        cluster=cluster,
        host=host,
        status="up",
        guest_agent=True,
        fqdn="db01.example.com",
        os_type="rhel_9x64",
        memory_bytes=8 * 2**30,
        cpu_cores=4,
    )
    vm.tags.add(tag)
    other_vm = VM.objects.create(manager=manager, engine_id=_uuid(9), name="web01", cluster=cluster, status="down")
    proxy_vm = VM.objects.create(manager=manager, engine_id=_uuid(10), name="proxy01", cluster=cluster, status="up")
    disks = [
        Disk.objects.create(
            manager=manager,
            engine_id=_uuid(20 + n),
            name=f"db01_disk{n}",
            vm=vm,
            storage_domain=domain,
            provisioned_size=size,
            actual_size=size // 3,
            bootable=n == 0,
            incremental_backup=True,
        )
        for n, size in enumerate((20 * 2**30, 100 * 2**30))
    ]
    Disk.objects.create(
        manager=manager,
        engine_id=_uuid(30),
        name="web01_disk0",
        vm=other_vm,
        storage_domain=domain,
        provisioned_size=10 * 2**30,
    )

    node = Node.objects.create(name="node1", version="1.0", slots=2, address="10.0.0.5", heartbeat=now)
    ProxyVM.objects.create(vm=proxy_vm, node=node)
    destination = BackupDestination.objects.create(
        name="nas", path=str(destination_path), capacity_bytes=2 * 2**40, free_bytes=2**40, checked=now - hours
    )
    policy = Policy.objects.create(
        name="nightly-prod", description="Production VMs every night", destination=destination, match_tag="nightly"
    )
    policy.vms.add(other_vm)
    rule = AlertRule.objects.create(policy=policy, emails="ops@example.com", rpo_hours=26)

    def job(kind: str, status: str, *, hours_ago: float, seconds: float, **fields) -> Job:
        started = now - hours_ago * hours
        return Job.objects.create(
            kind=kind,
            vm=fields.pop("vm", vm),
            name=fields.pop("name", vm.name),
            status=status,
            manager=manager,
            owner=admin,
            origin="page",
            node="node1",
            created=started,
            started=started,
            finished=started + datetime.timedelta(seconds=seconds) if status != Job.Status.RUNNING else None,
            **fields,
        )

    full_job = job(
        "backup", Job.Status.SUCCEEDED, hours_ago=50, seconds=754.2, bytes_done=14 * 2**30, bytes_total=14 * 2**30
    )
    incremental_job = job("backup", Job.Status.SUCCEEDED, hours_ago=26, seconds=4.6)
    latest_job = job("backup", Job.Status.SUCCEEDED, hours_ago=2, seconds=131)
    failed_job = job(
        "backup",
        Job.Status.FAILED,
        hours_ago=1,
        seconds=0.594566,
        error="The engine refused the snapshot: disk locked.",
    )
    skipped_job = Job.objects.create(
        kind="backup",
        vm=other_vm,
        name=other_vm.name,
        status=Job.Status.SKIPPED,
        skip_reason="Outside the backup window (01:00-05:00).",
        created=now - 3 * hours,
        finished=now - 3 * hours,
    )
    job("sync", Job.Status.SUCCEEDED, hours_ago=0.2, seconds=3.2, vm=None, name=manager.name)
    job("restore", Job.Status.RUNNING, hours_ago=0.1, seconds=0, bytes_done=3 * 2**30, bytes_total=20 * 2**30)
    for n, message in enumerate(("Snapshot created", "Transferring db01_disk0", "Failed: disk locked")):
        JobEvent.objects.create(
            job=failed_job, time=failed_job.started + datetime.timedelta(seconds=n * 0.2), message=message
        )

    def point(job: Job, type_: str, parent=None, **fields) -> BackupPoint:
        made = BackupPoint.objects.create(
            vm=vm,
            destination=destination,
            policy=policy,
            job=job,
            strategy=fields.pop("strategy", "cbt"),
            type=type_,
            parent=parent,
            status=fields.pop("status", BackupPoint.Status.COMPLETE),
            started=job.started,
            finished=job.finished,
            bytes_transferred=fields.pop("size", 14 * 2**30),
            bytes_stored=fields.pop("stored", 9 * 2**30),
            consistency=BackupPoint.Consistency.CRASH,
            verified=job.finished + hours,
            **fields,
        )
        for disk in disks:
            DiskBackup.objects.create(
                point=made,
                disk=disk,
                file=f"{made.uuid}/{disk.engine_id}.qcow2",
                virtual_size=disk.provisioned_size,
                stored_size=disk.actual_size // (1 if type_ == "full" else 20),
            )
        return made

    full = point(full_job, "full")
    incremental = point(incremental_job, "incremental", full, size=700 * 2**20, stored=512 * 2**20)
    point(latest_job, "incremental", incremental, size=1536 * 2**20, stored=1200 * 2**20)
    damaged = point(
        job("backup", Job.Status.SUCCEEDED, hours_ago=200, seconds=600, vm=vm),
        "full",
        strategy="image_transfer",
        status=BackupPoint.Status.DAMAGED,
        damage="db01_disk1.qcow2: checksum mismatch (expected blake3:12ab…, found blake3:9f00…)",
    )
    PolicyRun.objects.create(
        policy=policy, number=1, due=now - 2 * hours, started=now - 2 * hours, finished=now - hours
    )

    event = AlertEvent.objects.create(
        rule=rule, kind=AlertEvent.Kind.FAILED, subject=f"Backup of {vm.name} failed", vm=vm, sent=now
    )
    AlertDelivery.objects.create(
        rule=rule, channel=AlertDelivery.Channel.EMAIL, target="ops@example.com", subject=event.subject, status="sent"
    )
    AlertDelivery.objects.create(
        rule=rule,
        channel=AlertDelivery.Channel.WEBHOOK,
        target="https://hooks.example.com/backup",
        subject=event.subject,
        status="failed",
        attempts=3,
        error="Connection refused",
    )
    record(actor=admin, source="page", action="policy_changed", target=policy, changed=["schedule"])
    record(actor=admin, source="api", action="backup_requested", target=vm)
    record(actor="mallory", source="page", action="login_failed", address="192.0.2.7")
    issue_token(user=admin, name="monitoring script")

    instant = InstantRestore.objects.create(
        point=full,
        vm=vm,
        # The longest name oVirt takes, one word to the browser: its pages must still fit a phone.
        name="db01_instant_restore_for_the_quarterly_audit_of_the_payroll_data",
        cluster=cluster.name,
        node="node1",
        status=InstantRestore.Status.RUNNING,
        step="Running from the backup",
        who="ada",
        up_at=now - 0.5 * hours,
        seconds_to_up=42.5,
        storage_domain_name="backup-db01",
        top_bytes=300 * 2**20,
    )
    InstantRestore.objects.create(
        point=full,
        vm=vm,
        purpose=InstantRestore.Purpose.PROOF,
        name=f"proof-db01-{full.pk}",
        cluster=cluster.name,
        node="node1",
        status=InstantRestore.Status.DISCARDED,
        up_at=now - 20 * hours,
        seconds_to_up=61.0,
        ended=now - 19 * hours,
        proof_ok=True,
        proof_answer="db01 login:",
    )
    files_session = FileSession.objects.create(
        point=incremental,
        node="node1",
        status=FileSession.Status.CLOSED,
        opened_by=admin,
        who="ada",
        opened=now - 3 * hours,
        last_used=now - 2.5 * hours,
        closed=now - 2 * hours,
        close_reason="idle for 30 min",
    )
    return Sample(
        admin=admin,
        viewer=viewer,
        manager=manager,
        host=host,
        vm=vm,
        other_vm=other_vm,
        destination=destination,
        policy=policy,
        full=full,
        incremental=incremental,
        damaged=damaged,
        succeeded_job=full_job,
        failed_job=failed_job,
        skipped_job=skipped_job,
        instant=instant,
        files_session=files_session,
        node=node,
    )


def page_labels(*, fragments: bool = False) -> list[str]:
    """What the tests are parametrized by (known at collection): the URL names of the pages (and of
    FRAGMENTS' pieces if asked), then EXTRA's."""
    names = [name for name, _ in page_patterns() if name not in NOT_PAGES]
    return [name for name in names if fragments or name not in FRAGMENTS] + list(EXTRA)


def fill(label: str, sample: Sample) -> str:
    """The URL of one page (a label of page_labels()); the test fails saying what to do when it cannot."""
    import pytest

    urls = page_urls(sample, strict=False)
    if label not in urls:
        pytest.fail(f"tests/pages.py cannot fill the URL pattern {label}: add it to ARGUMENTS", pytrace=False)
    return urls[label]


class BrowserThread:
    """One headless Chromium for a whole module, driven from a thread of its own: Playwright runs an
    event loop where it is used, under which Django would open database connections that nothing
    closes (tests/browser.py); here the test thread keeps its plain connections. `call(fn)` runs
    fn(browser) in that thread and returns what it returns (or raises what it raised)."""

    def __init__(self):
        self._jobs: queue.Queue = queue.Queue()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="chromium", daemon=True)
        self._thread.start()
        self._ready.wait(60)
        if self._error:
            raise self._error

    def _run(self) -> None:
        from playwright.sync_api import sync_playwright

        from tests.browser import ARGS, CHROMIUM

        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
                self._ready.set()
                while (job := self._jobs.get()) is not None:
                    fn, done, finished = job
                    try:
                        done.append((True, fn(browser)))
                    except BaseException as e:  # handed to the caller
                        done.append((False, e))
                    finished.set()
                browser.close()
        except BaseException as e:
            self._error = e
            self._ready.set()

    def call(self, fn):
        done: list = []
        finished = threading.Event()
        self._jobs.put((fn, done, finished))
        while not finished.wait(1):
            if not self._thread.is_alive():
                raise RuntimeError("the browser thread died") from self._error
        ok, value = done[0]
        if not ok:
            raise value
        return value

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(30)
