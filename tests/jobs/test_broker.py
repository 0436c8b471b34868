"""A task broker that does not answer (REDIS_URL, Redis down): the pages say that jobs cannot be
queued, a request that queued one says so and names the job, and the job is kept and runs once the
broker is back."""

import shutil
import subprocess

import pytest
import redis
from django.urls import reverse
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.signing import SignedPackage

from core.models import AuditEvent
from jobs import broker
from jobs.models import Job
from jobs.runner import run_job
from jobs.tasks import job_ids_in_broker, requeue_lost_jobs
from tests.conftest import free_port
from tests.ovirtsim.helpers import wait_for

BANNER = "Jobs cannot be queued: the task broker at redis://127.0.0.1:{port}/6 does not answer."


@pytest.fixture
def redis_broker(monkeypatch):
    """The Redis broker (as REDIS_URL gives it) at a free port where nothing listens yet: start() starts
    a Redis server there. django-q2 reads its settings once, at import: its Conf is changed here."""
    port = free_port()
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", f"redis://127.0.0.1:{port}/6")
    monkeypatch.setattr(broker, "_last", {})
    servers = []

    def start(tmp_path):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is missing: run `make system-deps` (Debian package redis-server)")
        servers.append(
            subprocess.Popen(
                [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
                + ["--dir", str(tmp_path)],
                stdout=subprocess.DEVNULL,
            )
        )
        client = redis.Redis(host="127.0.0.1", port=port, db=6)
        wait_for(lambda: _pings(client), what="redis-server to start")
        monkeypatch.setattr(broker, "_last", {})  # as CHECK_EVERY_SECONDS later

    yield {"port": port, "start": start}
    for server in servers:
        server.terminate()
        server.wait()


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def test_it_shows_a_banner_on_the_pages_while_the_broker_does_not_answer(client, make_user, redis_broker, tmp_path):
    client.force_login(make_user("viewer"))
    page = client.get("/").content.decode()
    assert BANNER.format(port=redis_broker["port"]) in page
    assert "What you ask for is kept, and queued when it is back." in page

    redis_broker["start"](tmp_path)
    assert "Jobs cannot be queued" not in client.get("/").content.decode()


def test_it_shows_no_banner_with_the_embedded_broker(client, make_user):
    client.force_login(make_user("viewer"))
    assert "Jobs cannot be queued" not in client.get("/").content.decode()
    assert broker.broker_error() == ""


def test_it_hides_the_brokers_password_in_the_banner():
    url = broker.url_for_people("redis://:s3cret@redis.example:6380/2")
    assert (url, broker.url_for_people("redis://user:pw@h/0")) == (
        "redis://:***@redis.example:6380/2",
        "redis://user:***@h/0",
    )
    # Nor the connection options the settings add (REDIS_URL gets a connect timeout).
    assert broker.url_for_people("redis://h:6379/0?socket_connect_timeout=5") == "redis://h:6379/0"


def test_it_keeps_a_job_asked_for_while_the_broker_is_down_and_runs_it_once_back(
    api_as, redis_broker, tmp_path, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as on_commit:
        response = api_as("operator").post("/api/v1/backups/verify/")
    assert response.status_code == 503
    job = Job.objects.get(kind="verify")
    error = response.json()["error"]
    assert error["code"] == "broker_unavailable"
    assert error["message"] == (
        BANNER.format(port=redis_broker["port"]) + " What you ask for is kept, and queued when it is back. "
        f"Job {job.pk} is kept (queued): follow it at /api/v1/jobs/{job.pk}/."
    )
    assert AuditEvent.objects.filter(action="verify_requested").exists()
    # The hand-over to the broker, after the commit: dispatch() keeps the broker's error in (the
    # request goes on to its end); the job stays queued, its hand-over time noted.
    for callback in on_commit:
        callback()
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED and job.dispatched is not None

    redis_broker["start"](tmp_path)
    assert job_ids_in_broker() == set()
    assert requeue_lost_jobs(grace_seconds=0) == 1  # the reaper's pass once the broker answers
    assert job_ids_in_broker() == {job.pk}
    task = SignedPackage.loads(get_broker().dequeue()[0][1])  # what a worker's pusher takes
    assert (task["func"], task["args"]) == ("jobs.runner.run_job", (job.pk,))
    assert run_job(*task["args"]) == Job.Status.SUCCEEDED
    assert requeue_lost_jobs(grace_seconds=0) == 0


@pytest.mark.django_db(transaction=True)
def test_it_answers_a_job_request_with_the_error_body_when_the_hand_over_fails(api_as, redis_broker):
    """The hand-over runs when the request's transaction commits; whatever dispatch() does with the
    broker's error, the client reads the error body and the job is there, queued."""
    response = api_as("operator").post("/api/v1/backups/verify/")
    assert response.status_code == 503
    error = response.json()["error"]
    assert (error["status"], error["code"]) == (503, "broker_unavailable")
    assert error["message"].startswith(BANNER.format(port=redis_broker["port"]))
    assert Job.objects.get(kind="verify").status == Job.Status.QUEUED


def test_it_says_the_broker_is_down_as_soon_as_a_hand_over_fails(redis_broker, tmp_path):
    """What dispatch() calls when the broker refuses a task: the pages say it at once, without waiting
    for their next check of the broker."""
    redis_broker["start"](tmp_path)
    assert broker.broker_error() == ""
    broker.note_dispatch_failed(7, redis.ConnectionError("Connection refused"))
    assert broker.broker_error() == BANNER.format(port=redis_broker["port"]) + (
        " What you ask for is kept, and queued when it is back."
    )
    assert broker.is_broker_failure(redis.ConnectionError()) and not broker.is_broker_failure(ValueError())


@pytest.mark.django_db(transaction=True)
def test_it_answers_a_page_that_queues_a_job_while_the_broker_is_down(client, make_user, redis_broker):
    """A page's form that queues a job: no error page, the action audited, the job kept, and the
    banner on the page it leads to."""
    from core.models import AuditEvent

    client.force_login(make_user("operator"))
    response = client.post(reverse("point-verify-all"), follow=True)
    assert response.status_code == 200
    assert BANNER.format(port=redis_broker["port"]) in response.content.decode()
    assert Job.objects.get(kind="verify").status == Job.Status.QUEUED
    assert AuditEvent.objects.filter(action="verify_requested").exists()
