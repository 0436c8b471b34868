"""The whole published API schema, fuzzed as each role: no 5xx, and every answer is what the schema says.

Schemathesis generates requests for every operation of `/api/v1/schema/` (valid and invalid
ones) and calls the Django application in-process through WSGI, on the test's database. A few
seeded rows give detail endpoints real ids. Each call runs in a savepoint that is rolled back,
so every call sees the same rows (a DELETE does not leave the next operation only 404s), and
nothing is committed: a queued sync, backup, restore or verify job never starts.
"""

import ipaddress
import socket

import hypothesis
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from alerts.models import AlertDelivery, AlertEvent, AlertRule
from core import roles
from core.audit import record
from core.tokens import issue_token
from inventory.models import VM, Cluster, DataCenter, Disk, Host, Manager, ProxyVM, StorageDomain, Tag
from jobs.models import Job, Node
from policies.models import Policy
from recovery.models import FileSession, InstantRestore
from repository.models import BackupDestination, BackupPoint, DiskBackup
from tests.conftest import free_port

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture
def loopback_only(monkeypatch):
    """Test-connection, fetch-ca, a new manager and test-ssh dial whatever address the request names
    (generated ones included); here a name that is not loopback does not resolve, so nothing leaves
    the machine. Every dial goes through getaddrinfo: socket.create_connection, urllib, paramiko."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        resolved = real(host, *args, **kwargs) if _is_loopback_name(host) else []
        if not resolved or not all(ipaddress.ip_address(r[4][0]).is_loopback for r in resolved):
            raise socket.gaierror(socket.EAI_NONAME, "not resolved in this test: loopback only")
        return resolved

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def _is_loopback_name(host) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]")).is_loopback
    except ValueError:
        return False


@pytest.fixture
def seeded(db, users, destination_dir):
    """One row of each kind the API shows, keyed by the collection that serves it."""
    closed = free_port()  # nothing listens there: a connection test fails at once
    manager = Manager.objects.create(
        name="m", api_url=f"https://127.0.0.1:{closed}/ovirt-engine/api", username="admin@internal", verify_tls=False
    )
    manager.password = "secret"
    manager.save()
    dc = DataCenter.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-0000000000d1", name="dc")
    cluster = Cluster.objects.create(
        manager=manager, engine_id="00000000-0000-0000-0000-0000000000c1", name="c", data_center=dc
    )
    host = Host.objects.create(
        manager=manager,
        engine_id="00000000-0000-0000-0000-0000000000a1",
        name="h",
        cluster=cluster,
        address="127.0.0.1",
        ssh_port=closed,
    )
    sd = StorageDomain.objects.create(
        manager=manager, engine_id="00000000-0000-0000-0000-0000000000e1", name="sd", data_center=dc
    )
    tag = Tag.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-0000000000f1", name="t")
    vm = VM.objects.create(
        manager=manager, engine_id="00000000-0000-0000-0000-000000000001", name="vm1", cluster=cluster, host=host
    )
    vm.tags.add(tag)
    disk = Disk.objects.create(
        manager=manager, engine_id="00000000-0000-0000-0000-000000000002", name="d1", vm=vm, storage_domain=sd
    )
    proxy_vm = VM.objects.create(
        manager=manager, engine_id="00000000-0000-0000-0000-000000000003", name="proxy1", cluster=cluster
    )
    node = Node.objects.create(name="n1", version="1", vm_id=str(proxy_vm.engine_id))
    proxy = ProxyVM.objects.create(vm=proxy_vm, node=node)
    destination = BackupDestination.objects.create(name="dest", path=str(destination_dir))
    policy = Policy.objects.create(name="p", destination=destination, match_name_regex="vm")
    job = Job.objects.create(kind="backup", vm=vm, name="vm1", status=Job.Status.SUCCEEDED)
    job.log("info", "done")
    point = BackupPoint.objects.create(
        vm=vm, destination=destination, policy=policy, job=job, strategy="image_transfer", status="complete"
    )
    disk_backup = DiskBackup.objects.create(point=point, disk=disk, file=f"{vm.engine_id}/{point.uuid}/d1.qcow2")
    # Closed: what it is asked answers in words, and nothing is opened on this machine.
    file_session = FileSession.objects.create(
        point=point, node="n1", who="someone", status=FileSession.Status.CLOSED, close_reason="test"
    )
    # Ended: migrate and discard are refused in words (409), nothing is queued.
    instant = InstantRestore.objects.create(
        point=point, vm=vm, name="vm1-instant", node="n1", status=InstantRestore.Status.DISCARDED, cluster="c"
    )
    rule = AlertRule.objects.create(policy=policy, emails="ops@example.com", rpo_hours=24)
    event = AlertEvent.objects.create(
        rule=rule, kind="failed", subject="Backup of vm1 failed", vm=vm, job=job, point=point, details={"job": job.pk}
    )
    delivery = AlertDelivery.objects.create(rule=rule, channel="email", target="ops@example.com", status="sent")
    delivery.events.add(event)
    audit = record(actor=users[roles.ADMIN], source="api", action="policy_created", target=policy)
    token, _ = issue_token(user=users[roles.VIEWER], name="seeded")
    return {
        "tokens": token.pk,
        "alert-rules": rule.pk,
        "alert-deliveries": delivery.pk,
        "alert-events": event.pk,
        "audit": audit.pk,
        "managers": manager.pk,
        "datacenters": dc.pk,
        "clusters": cluster.pk,
        "hosts": host.pk,
        "storagedomains": sd.pk,
        "tags": tag.pk,
        "vms": vm.pk,
        "proxies": proxy.pk,
        "disks": disk.pk,
        "destinations": destination.pk,
        "policies": policy.pk,
        "jobs": job.pk,
        "backups": point.pk,
        "diskbackups": disk_backup.pk,
        "file-sessions": file_session.pk,
        "instant-restores": instant.pk,
        "users": users[roles.VIEWER].pk,
    }


@pytest.fixture
def token(request, users) -> str:
    return issue_token(user=users[request.param], name="schema")[1]


@pytest.fixture
def role_tokens(users) -> dict[str, str]:
    """A token of a user of each role."""
    return {role: issue_token(user=users[role], name="schema")[1] for role in roles.ROLES}


@pytest.fixture
def api_schema(seeded, role_tokens, loopback_only):
    from backupsite.wsgi import application

    token = role_tokens[roles.ADMIN]  # reads the schema; each call names its own user

    # As Django's test client does: the handler would close the test's connection after each
    # request, and with it the transaction holding the seeded rows.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi(
        "/api/v1/schema/?format=json", application, headers={"Authorization": f"Token {token}"}
    )
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _check_operation(operation, mode: GenerationMode, seeded: dict, tokens: dict[str, str]) -> None:
    """Each generated request made as each role: the generation, the costly part, is shared."""

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=EXAMPLES,
        derandomize=True,  # the same requests every run: a failure here is one on every machine
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking: the first failure will do
    )
    def check(case):
        ids = case.path_parameters or {}
        if "id" in ids and isinstance(ids["id"], int) and ids["id"] % 4:
            # Three of four generated ids become the seeded row's, so detail endpoints are reached,
            # not only their 404.
            ids["id"] = seeded[case.path.split("/")[3]]
        for role, token in tokens.items():
            try:
                with transaction.atomic():
                    case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)
                    transaction.set_rollback(True)
            except (Exception, BaseExceptionGroup) as e:
                raise AssertionError(f"as a user with role {role}: {e}") from e

    check()


EXAMPLES = 5


@pytest.mark.slow
def test_it_answers_every_operation_within_its_schema(api_schema, seeded, role_tokens):
    # schemathesis.pytest.from_fixture would give one subtest per operation, but it sets
    # Node._nodeid, which pytest 9.2 no longer has; the operations are walked here instead, all of
    # them even after a failure, so one run lists every fault.
    failures = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _check_operation(operation, mode, seeded, role_tokens)
            except hypothesis.errors.Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE, operation.label  # nothing in it can be made invalid
            except (Exception, BaseExceptionGroup) as e:
                failures.append(f"{operation.label} ({mode}): {e}")
    assert len(operations) > 40
    assert failures == [], "\n\n".join(failures)


@pytest.mark.parametrize("token", [roles.ADMIN], indirect=True)
@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/v1/jobs/{id}/"),  # a job without owner or progress: nulls the schema did not allow
        ("GET", "/api/v1/destinations/{id}/"),  # a destination not measured yet: used_percent null
        ("GET", "/api/v1/users/{id}/"),  # the role, read back, was documented as write-only
        ("GET", "/api/v1/jobs/{id}/events/"),  # a page of events, documented as one job
        ("POST", "/api/v1/managers/{id}/sync/"),  # 202 with the queued job, documented as 200 with a manager
        ("POST", "/api/v1/jobs/{id}/cancel/"),  # 400 with the error body, documented as nothing
    ],
)
def test_it_answers_within_the_schema_where_it_once_did_not(api_schema, seeded, token, method, path):
    case = api_schema[path][method].Case(path_parameters={"id": seeded[path.split("/")[3]]})
    with transaction.atomic():
        case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)
        transaction.set_rollback(True)
