"""Many API clients at once, each in its own thread with its own database connection, on the real
database (SQLite's file in WAL, or PostgreSQL): no 5xx, no "database is locked"."""

import threading
from collections import Counter

import pytest
from django.db import connections
from django.urls import reverse
from rest_framework.test import APIClient

from core import roles
from core.tokens import issue_token
from inventory.models import VM, Manager
from jobs.models import Job
from repository.models import BackupDestination
from tests.conftest import free_port


def run_clients(count: int, work) -> list[str]:
    """Start `count` threads together, each calling work(n); the problems they met, as text."""
    problems = []
    barrier = threading.Barrier(count)

    def client(n):
        try:
            barrier.wait()
            work(n)
        except Exception as e:
            problems.append(f"client {n}: {type(e).__name__}: {e}")
        finally:
            connections.close_all()  # this thread's own connection

    threads = [threading.Thread(target=client, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return problems


def token_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(user=user, name='concurrency test')[1]}")
    return client


@pytest.fixture
def manager(db):
    # A closed port on loopback: nothing here may reach an engine (the queued jobs never run).
    return Manager.objects.create(
        name="m", api_url=f"https://127.0.0.1:{free_port()}/ovirt-engine/api", username="a@internal", verify_tls=False
    )


@pytest.mark.django_db(transaction=True)
def test_it_answers_concurrent_sync_requests_with_the_one_active_job(users, manager):
    """The unique partial constraint job_one_active_sync_per_manager refuses a second active sync;
    a request that loses that race gets the sync that won it, also when that sync ends meanwhile."""
    client = token_client(users[roles.OPERATOR])
    url = reverse("api:manager-sync", kwargs={"pk": manager.pk})
    answers = Counter()
    stop = threading.Event()

    def request(n):
        if n == 0:  # a worker that ends each sync as soon as it is queued
            while not stop.is_set():
                for job in Job.objects.active().filter(kind="sync"):
                    job.fail("ended by the test")
            return
        try:
            for _ in range(15):
                response = client.post(url)
                answers[response.status_code] += 1
                assert response.status_code in (202, 409), response.content
                if response.status_code == 202:
                    assert Job.objects.filter(pk=response.json()["job"], kind="sync").exists()
        finally:
            if n == 1:
                stop.set()

    problems = run_clients(9, request)
    stop.set()
    assert problems == []
    assert answers[202] > 0 and set(answers) <= {202, 409}
    assert Job.objects.active().filter(kind="sync").count() <= 1


@pytest.mark.django_db(transaction=True)
def test_it_serves_20_clients_reading_and_writing_at_once(users, manager, destination_dir):
    destination = BackupDestination.objects.create(name="d", path=str(destination_dir))
    vm = VM.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-000000000001", name="vm1")
    operator, viewer = users[roles.OPERATOR], users[roles.VIEWER]
    token_client(operator), token_client(viewer)
    statuses = Counter()
    reads = ["api:vm-list", "api:job-list", "api:policy-list", "api:backup-list", "api:manager-list"]

    def work(n):
        client = token_client(operator if n % 2 else viewer)
        for i in range(10):
            if n % 2 == 0:
                response = client.get(reverse(reads[(n + i) % len(reads)]))
            elif i % 3 == 0:
                response = client.post(reverse("api:manager-sync", kwargs={"pk": manager.pk}))
            elif i % 3 == 1:
                body = {"name": f"p{n}-{i}", "destination": destination.pk, "vms": [vm.pk]}
                response = client.post(reverse("api:policy-list"), body, format="json")
            else:
                response = client.post(reverse("api:vm-backup", kwargs={"pk": vm.pk}), {"type": "full"}, format="json")
            statuses[response.status_code] += 1
            assert response.status_code < 500, response.content

    problems = run_clients(20, work)
    assert problems == []
    assert statuses[500] == 0 and statuses[200] == 100 and statuses[201] == 30
    # Backups of one VM while one is queued: the first is queued, the others refused with a message.
    assert Job.objects.filter(kind="backup").count() == 1
