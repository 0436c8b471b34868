import threading

import pytest
from django.db import connection

from jobs.errors import IllegalTransition
from jobs.models import Job


@pytest.fixture
def job(db):
    return Job.objects.create(kind="backup", name="vm1")


def test_it_runs_the_happy_path(job):
    job.start(node="node-a")
    job.set_progress(512, 1024)
    assert job.progress_percent == 50.0
    job.succeed(result={"point": 1})
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED
    assert job.node == "node-a"
    assert job.started <= job.finished
    assert job.result == {"point": 1}
    assert [e.message for e in job.events.all()] == ["Started on node-a", "Succeeded"]


@pytest.mark.parametrize("final", ["succeed", "fail", "mark_cancelled"])
def test_it_refuses_to_leave_a_final_status(job, final):
    job.start()
    getattr(job, final)(*(["boom"] if final == "fail" else []))
    for move in (job.start, job.succeed, job.mark_cancelled, lambda: job.fail("again")):
        with pytest.raises(IllegalTransition):
            move()


def test_it_refuses_to_succeed_a_job_that_never_ran(job):
    with pytest.raises(IllegalTransition, match="cannot move from queued to succeeded"):
        job.succeed()
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED


def test_it_lets_only_one_worker_claim_a_job(job):
    other = Job.objects.get(pk=job.pk)  # a second worker's stale copy
    job.start(node="a")
    with pytest.raises(IllegalTransition):
        other.start(node="b")
    job.refresh_from_db()
    assert job.node == "a"


@pytest.mark.django_db(transaction=True)
def test_it_lets_only_one_of_concurrent_claims_win():
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers; the race needs PostgreSQL")
    job = Job.objects.create(kind="backup")
    wins, losses = [], []
    barrier = threading.Barrier(4)

    def claim(n):
        from django.db import connections

        barrier.wait()
        try:
            Job.objects.get(pk=job.pk).start(node=f"n{n}")
            wins.append(n)
        except IllegalTransition:
            losses.append(n)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 3


def test_it_cancels_a_queued_job_at_once(job):
    job.request_cancel()
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert job.finished is not None


def test_it_only_flags_a_running_job_for_cancel(job):
    job.start()
    job.request_cancel()
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
    assert job.cancel_is_requested()
    job.mark_cancelled()
    assert Job.objects.get(pk=job.pk).status == Job.Status.CANCELLED


def test_it_holds_a_backup_while_its_storage_domain_is_busy(db, settings):
    from inventory.models import VM, Disk, Manager, StorageDomain
    from jobs.runner import busy_limit

    settings.MAX_JOBS_PER_STORAGE_DOMAIN = 1
    manager = Manager.objects.create(name="m", api_url="https://e/ovirt-engine/api", username="a@internal")
    sd = StorageDomain.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-0000000000d1", name="sd")
    vms = []
    for n in range(2):
        vm = VM.objects.create(manager=manager, engine_id=f"00000000-0000-0000-0000-00000000000{n}", name=f"v{n}")
        Disk.objects.create(
            manager=manager, engine_id=f"00000000-0000-0000-0001-00000000000{n}", name=f"d{n}", vm=vm, storage_domain=sd
        )
        vms.append(vm)
    first = Job.objects.create(kind="backup", vm=vms[0], manager=manager)
    second = Job.objects.create(kind="backup", vm=vms[1], manager=manager)
    assert busy_limit(second) == ""
    first.start()
    assert busy_limit(second) == "1 jobs already use storage domain sd"
    first.succeed()
    assert busy_limit(second) == ""


def test_it_reports_throughput_and_time_left(job, monkeypatch):
    from datetime import UTC, datetime, timedelta

    from django.utils import timezone

    # The job's clock is set, not read: 100 MiB in 10 s leave 300 MiB for 30 s on any machine.
    clock = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: clock)
    job.start()
    clock += timedelta(seconds=10)
    job.set_progress(100 * 2**20, 400 * 2**20)
    assert job.throughput == 10 * 2**20
    assert job.eta_seconds == 30
    clock += timedelta(seconds=5)  # no progress since: the rate falls, the time left grows
    assert (job.throughput, job.eta_seconds) == (100 * 2**20 / 15, 45)
    job.succeed()
    assert job.eta_seconds is None


def test_it_names_a_kind_as_the_app_owning_it_registered_it(client, users, monkeypatch):
    """The jobs app lists no kind of the apps above it: a kind's label comes from its registration."""
    from django.urls import reverse

    from core import roles
    from jobs.runner import HANDLERS, register_handler

    monkeypatch.setitem(HANDLERS, "test-kind", None)  # removed again after the test
    register_handler("test-kind", lambda *, job: {}, label="Tested thing")
    registered = Job.objects.create(kind="test-kind", name="one")
    unknown = Job.objects.create(kind="not_on_this_node", name="two")
    assert (str(registered), unknown.kind_label) == (f"Tested thing #{registered.pk}", "Not on this node")
    client.force_login(users[roles.VIEWER])
    page = client.get(reverse("job-list")).content.decode()
    assert "<td>Tested thing</td>" in page and "<td>Not on this node</td>" in page


def test_it_shows_tracebacks_to_admins_only(api_as, client, users, job):
    from django.urls import reverse

    from core import roles

    job.log("info", "Started")
    job.log("debug", "Traceback (most recent call last): secret internals")
    url = reverse("api:job-events", kwargs={"pk": job.pk})
    seen = {role: [e["level"] for e in api_as(role).get(url).json()["results"]] for role in roles.ROLES}
    assert seen == {roles.ADMIN: ["info", "debug"], roles.OPERATOR: ["info"], roles.VIEWER: ["info"]}
    client.force_login(users[roles.VIEWER])
    assert b"secret internals" not in client.get(reverse("job-detail", kwargs={"pk": job.pk})).content
    client.force_login(users[roles.ADMIN])
    assert b"secret internals" in client.get(reverse("job-detail", kwargs={"pk": job.pk})).content


@pytest.fixture
def data_moving_kind(monkeypatch):
    """A job kind that counts toward the concurrency limits (the slots of a backup) and does nothing."""
    from inventory.slots import vm_slots
    from jobs.runner import HANDLERS, Handler

    calls = []

    def run(*, job):
        calls.append(job.pk)
        job.check_cancel()
        return {"ran": True}

    monkeypatch.setitem(HANDLERS, "test-move", Handler("test-move", run, moves_data=True, slots=vm_slots))
    return calls


def test_it_puts_a_job_aside_at_a_limit_without_holding_a_worker(db, settings, data_moving_kind):
    from inventory.models import VM, Manager
    from jobs.runner import dispatch_waiting, run_job

    settings.MAX_JOBS_PER_MANAGER = 1
    manager = Manager.objects.create(name="m", api_url="https://e/ovirt-engine/api", username="a@internal")
    vms = [
        VM.objects.create(manager=manager, engine_id=f"00000000-0000-0000-0000-00000000000{n}", name=f"v{n}")
        for n in range(2)
    ]
    first = Job.objects.create(kind="test-move", vm=vms[0], manager=manager)
    second = Job.objects.create(kind="test-move", vm=vms[1], manager=manager)
    first.start()
    assert run_job(second.pk) == "queued"  # it returns at once: the worker is free for other jobs
    assert run_job(second.pk) == "queued"
    second.refresh_from_db()
    assert second.waiting_for == "1 jobs already run on manager m"
    assert [e.message for e in second.events.all()] == ["Waiting: 1 jobs already run on manager m"]
    assert list(Job.objects.waiting()) == [second]

    first.succeed()
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    assert dispatch_waiting() == 1
    second.refresh_from_db()
    assert second.status == Job.Status.SUCCEEDED and second.result == {"ran": True}
    assert second.waiting_for == "" and data_moving_kind == [second.pk]


def test_it_dispatches_again_a_queued_job_whose_task_was_lost(db):
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import OrmQ

    from jobs.tasks import job_ids_in_broker, requeue_lost_jobs

    long_ago = timezone.now() - timedelta(minutes=5)
    lost = Job.objects.create(kind="verify", name="lost", dispatched=long_ago)
    fresh = Job.objects.create(kind="verify", name="fresh", dispatched=timezone.now())
    # Saved a moment ago, its dispatch on commit still to come: not lost either.
    Job.objects.create(kind="verify", name="saving")
    assert requeue_lost_jobs(grace_seconds=60) == 1  # the fresh one's worker may be about to claim it
    assert job_ids_in_broker() == {lost.pk}
    assert lost.events.get().message == (
        "Handed to the workers again: no worker had started it (one may have stopped after taking it)"
    )
    assert requeue_lost_jobs(grace_seconds=60) == 0  # its task waits in the broker: no second one

    # A worker takes the task (the ORM broker hides it until its retry time, a day) and dies.
    OrmQ.objects.update(lock=timezone.now() + timedelta(days=1))
    Job.objects.filter(pk__in=[lost.pk, fresh.pk]).update(dispatched=long_ago)
    assert job_ids_in_broker() == set()
    assert requeue_lost_jobs(grace_seconds=60) == 2
    assert job_ids_in_broker() == {lost.pk, fresh.pk}
    # Saved long ago and never handed over (the web server stopped before its commit callback).
    orphan = Job.objects.create(kind="verify", name="orphan", created=long_ago)
    assert requeue_lost_jobs(grace_seconds=60) == 1 and orphan.pk in job_ids_in_broker()


def test_it_queues_the_job_again_when_its_worker_is_stopped(db, monkeypatch):
    """The stop signal arrives while the job runs: it stops at its next check, like a cancel, but
    goes back to the queue with a task in the broker instead of ending cancelled."""
    from jobs import shutdown
    from jobs.runner import HANDLERS, Handler, run_job
    from jobs.tasks import job_ids_in_broker

    monkeypatch.setitem(shutdown._state, "stopping", False)

    def run(*, job):
        job.set_progress(100, 1000)
        shutdown._on_stop_signal(15, None)  # SIGTERM, as systemd sends it
        job.check_cancel()
        return {"ran": True}

    monkeypatch.setitem(HANDLERS, "test-move", Handler("test-move", run, moves_data=True))
    job = Job.objects.create(kind="test-move", name="vm1")
    assert run_job(job.pk) == Job.Status.QUEUED
    job.refresh_from_db()
    assert (job.started, job.node, job.bytes_done, job.error) == (None, "", 0, "")
    assert job.events.last().message.endswith(
        "was stopped while running this job; what it had made is undone, and the job is queued again "
        "to start from the beginning."
    )
    assert job_ids_in_broker() == {job.pk}


@pytest.fixture
def redis_server(tmp_path):
    """A Redis server of the test's own, on a free port, keeping nothing on disk."""
    import shutil
    import subprocess

    import redis

    from tests.conftest import free_port
    from tests.ovirtsim.helpers import wait_for

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is missing: run `make system-deps` (Debian package redis-server)")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
        + ["--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        wait_for(lambda: _pings(client), what="redis-server to start")
        yield client
    finally:
        server.terminate()
        server.wait()


def _pings(client) -> bool:
    import redis

    try:
        return client.ping()
    except redis.exceptions.ConnectionError:
        return False


def test_it_reads_the_jobs_waiting_in_a_redis_broker(db, redis_server):
    """With REDIS_URL the broker pops a task when a worker takes it: only what is still listed waits."""
    from django_q.brokers.redis_broker import Redis
    from django_q.signing import SignedPackage

    from jobs.tasks import job_ids_in_broker

    broker = Redis(list_key="backup")
    broker.connection = redis_server
    broker.enqueue(SignedPackage.dumps({"func": "jobs.runner.run_job", "args": (7,), "kwargs": {}}))
    broker.enqueue(SignedPackage.dumps({"func": "something.else", "args": (8,), "kwargs": {}}))
    broker.enqueue(b"not signed by us")
    broker.enqueue(SignedPackage.dumps({"func": "jobs.runner.run_job", "args": (9,), "kwargs": {}}))
    assert job_ids_in_broker(broker) == {7, 9}
    broker.dequeue()  # a worker takes the first task
    assert job_ids_in_broker(broker) == {9}


def test_it_hands_out_only_the_waiting_jobs_that_may_start(db, settings, data_moving_kind):
    """Thousands may wait after a scheduled run: a job's end hands out at most a node's worth of them,
    skipping those still over a limit, instead of giving every one a task again."""
    from django_q.models import OrmQ

    from inventory.models import VM, Host, Manager
    from jobs.runner import dispatch_waiting
    from jobs.tasks import job_ids_in_broker

    settings.MAX_JOBS_PER_HOST = 1
    manager = Manager.objects.create(name="m", api_url="https://e/ovirt-engine/api", username="a@internal")
    busy_host, free_host = (
        Host.objects.create(manager=manager, engine_id=f"00000000-0000-0000-0000-0000000000a{n}", name=f"h{n}")
        for n in range(2)
    )
    vm = VM.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-000000000100", name="r", host=busy_host)
    running = Job.objects.create(kind="test-move", manager=manager, vm=vm)
    running.start()
    waiting = []
    for n in range(6):
        vm = VM.objects.create(
            manager=manager,
            engine_id=f"00000000-0000-0000-0000-00000000020{n}",
            name=f"w{n}",
            host=busy_host if n < 2 else free_host,
        )
        waiting.append(Job.objects.create(kind="test-move", manager=manager, vm=vm, waiting_for="its turn"))
    assert dispatch_waiting(most=2) == 2
    # The two on the busy host stay aside; the next two oldest on the free host get a task.
    assert job_ids_in_broker() == {waiting[2].pk, waiting[3].pk}
    assert OrmQ.objects.count() == 2


def test_it_never_lets_one_policys_waiting_jobs_hide_anothers(db, settings, data_moving_kind):
    """A big run leaves many jobs waiting for its policy's parallel VMs; another run's waiting job
    (another policy's), younger than all of them, is still handed out when it may start."""
    from inventory.models import VM, Manager
    from jobs.runner import dispatch_waiting
    from jobs.tasks import job_ids_in_broker
    from policies.models import Policy
    from repository.models import BackupDestination

    manager = Manager.objects.create(name="m", api_url="https://e/ovirt-engine/api", username="a@internal")
    destination = BackupDestination.objects.create(name="d", path=settings.BACKUP_ROOTS[0])
    big, small = (Policy.objects.create(name=n, destination=destination, parallel_vms=1) for n in ("big", "small"))

    def job(policy, n, **fields):
        vm = VM.objects.create(manager=manager, engine_id=f"00000000-0000-0000-0000-{n:012d}", name=f"vm{n}")
        group = policy.runs.get_or_create(number=1, due=policy.created)[0].job_group
        return Job.objects.create(kind="test-move", manager=manager, vm=vm, started_by=policy, group=group, **fields)

    job(big, 0).start()  # its one parallel VM runs
    for n in range(1, 150):
        job(big, n, waiting_for="its turn in run 1 of policy big")
    other = job(small, 999, waiting_for="its turn in run 1 of policy small")
    assert dispatch_waiting(most=2) == 1
    assert job_ids_in_broker() == {other.pk}


def test_it_tries_an_undo_the_engine_keeps_refusing_less_and_less_often(manager):
    """An ended job whose record the engine cannot undo (here, the engine unreachable) is retried at the
    next pass, then after 2, 4, 8... minutes (at most hourly), says so after five refusals, and is
    cleaned at the first pass that reaches the engine."""
    from datetime import timedelta

    from django.utils import timezone

    from jobs.tasks import retry_undoing_left_objects
    from tests.conftest import free_port

    job = Job.objects.create(kind="backup", name="b", manager=manager)
    job.start()
    vm = manager.vm_set.get(name="test01")
    # A snapshot the engine no longer has: once reached, the undo finds it gone, which is done.
    job.remember_engine_object("snapshot", "3e9f1a52-0000-4000-8000-000000000001", vm=str(vm.engine_id), name="job 1")
    job.fail("boom")
    reachable = manager.api_url
    manager.api_url = f"https://127.0.0.1:{free_port()}/ovirt-engine/api"  # nothing listens there
    manager.save(update_fields=["api_url"])

    def attempts() -> int:
        job.refresh_from_db()
        return job.result["undo_retry"]["attempts"]

    t = timezone.now()
    passes = []
    for minute in range(40):
        before = (job.result.get("undo_retry") or {}).get("attempts", 0)
        retry_undoing_left_objects(now=t + timedelta(minutes=minute))
        if attempts() > before:
            passes.append(minute)
    assert passes == [0, 1, 3, 7, 15, 31]  # each wait twice the last
    warnings = [e.message for e in job.events.filter(level="warning")]
    assert len(warnings) == 1 and "after 5 attempts" in warnings[0] and "snapshot 'job 1'" in warnings[0]

    manager.api_url = reachable
    manager.save(update_fields=["api_url"])
    assert retry_undoing_left_objects(now=t + timedelta(minutes=39)) == 0  # not due yet
    assert retry_undoing_left_objects(now=t + timedelta(minutes=63)) == 1
    job.refresh_from_db()
    assert "engine_objects" not in job.result and "undo_retry" not in job.result


def test_it_reports_a_recorded_kind_no_undo_is_registered_for(manager, monkeypatch):
    """The reaper undoes each record by the undo its kind's owner registered (ovirt.leftovers.register_undo):
    a kind nobody registered (a strategy of a later version, say) is reported and kept, not dropped,
    and undone once an undo for it is registered. A kind has one undo."""
    from jobs.tasks import give_up_on, retry_undoing_left_objects
    from ovirt import leftovers
    from ovirt.leftovers import register_undo

    monkeypatch.setattr(leftovers, "UNDOS", dict(leftovers.UNDOS))  # the test's registrations end with it
    job = Job.objects.create(kind="backup", name="b", manager=manager, params={"strategy": "image_transfer"})
    job.start()
    job.remember_engine_object("hologram", "h-1", name="the proxy's ghost")
    assert give_up_on(job, "The worker running this job stopped responding.")
    job.refresh_from_db()
    assert "Still on the engine: hologram the proxy's ghost (h-1)" in job.error, job.error
    said = job.events.get(message__startswith="Could not undo").message
    assert (
        "no undo is registered for records of kind 'hologram' (known: backup, disk, disk_attachment, exported_vm, "
        "imported_domain, lv, registered_vm," in said
    )
    assert [o["id"] for o in job.engine_objects] == ["h-1"]

    undone = []

    def dispel(context, obj) -> str:
        undone.append(obj["id"])
        return f"Dispelled hologram {obj['id']}"

    register_undo("hologram", dispel, describe=lambda obj: f"hologram {obj['id']}")
    assert retry_undoing_left_objects() == 1
    job.refresh_from_db()
    assert undone == ["h-1"] and job.engine_objects == []
    assert job.events.filter(message="Dispelled hologram h-1").exists()
    with pytest.raises(ValueError, match="An undo is already registered for engine object records of kind 'snapshot'"):
        register_undo("snapshot", dispel, describe=str)
