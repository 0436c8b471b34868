"""Every list page and list endpoint asks the database as many times for 1,000 VMs as for 10, and
shows a page of rows, not all of them (issue 22, large estates)."""

from django.db import connection
from django.test.utils import CaptureQueriesContext

from backupsite.urls import api_router
from core import roles
from core.pages import PAGE_SIZE
from tests.estate import build_estate

PAGES = [
    "/",
    "/inventory/",
    "/inventory/?q=vm0",
    "/inventory/?rpo=ok",
    "/inventory/?rpo=uncovered&tag=tag7",
    "/inventory/managers/",
    "/inventory/hosts/",
    "/policies/",
    "/alerts/",
    "/jobs/",
    "/backups/",
    "/files/",
    "/instant/",
    "/destinations/",
    "/settings/",
    "/settings/tokens/",
    "/settings/audit/",
]
# Every endpoint the API router lists (a list endpoint per prefix), with a filter on the VMs'.
ENDPOINTS = sorted({f"/api/v1/{prefix}/" for prefix, _, _ in api_router.registry}) + ["/api/v1/vms/?search=vm0"]


def filtered_lists() -> list[str]:
    """The jobs and backups lists with every filter they have set (the estate's policy and destination)."""
    from policies.models import Policy
    from repository.models import BackupDestination

    policy, destination = Policy.objects.order_by("pk").first(), BackupDestination.objects.get(name="estate")
    return [
        f"/jobs/?status=succeeded&kind=backup&since=24h&policy={policy.pk}",
        f"/backups/?status=complete&destination={destination.pk}&strategy=image_transfer&type=full&vm=vm0"
        "&since=2020-01-01&until=2100-01-01",
    ]


def _queries(client, url: str) -> tuple[int, object]:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(ctx), response


def test_it_asks_as_many_queries_for_1000_vms_as_for_10_on_every_list(client, users, tmp_path):
    client.force_login(users[roles.ADMIN])
    manager = build_estate(10, destination_path=str(tmp_path))
    urls = PAGES + filtered_lists() + ENDPOINTS
    for url in urls:  # what a first visit makes once (the site's SSH key on the settings page)
        _queries(client, url)
    small = {url: _queries(client, url)[0] for url in urls}
    build_estate(990, destination_path=str(tmp_path), start=10, manager=manager)
    large = {url: _queries(client, url) for url in urls}
    grown = {url: (small[url], n) for url, (n, _) in large.items() if n != small[url]}
    assert grown == {}, f"queries for 10 VMs, then 1,000: {grown}"
    # Paginated: a page of rows, and the way to the others.
    for url in ("/inventory/", "/jobs/", "/backups/"):
        page = large[url][1].content.decode()
        assert "Page 1 of 10 (1000 in all)" in page, url
    # The RPO filter is the database's: the 250 VMs the estate's policies cover, backed up an hour ago.
    assert "Page 1 of 3 (250 in all)" in large["/inventory/?rpo=ok"][1].content.decode()
    for url in ("/api/v1/vms/", "/api/v1/jobs/", "/api/v1/backups/", "/api/v1/disks/"):
        body = large[url][1].json()
        assert body["count"] >= 1000 and len(body["results"]) == 50 and body["next"], url
    assert PAGE_SIZE == 100


def _raise_alerts(rule, vms: list, jobs: list) -> None:
    """An alert per VM (failed, linked to its job) and a delivery of each, as send_alert leaves them."""
    from alerts.models import AlertDelivery, AlertEvent

    events = AlertEvent.objects.bulk_create(
        AlertEvent(
            rule=rule, kind="failed", subject=f"Backup of {vm.name} failed", vm=vm, job=job, details={"job": job.pk}
        )
        for vm, job in zip(vms, jobs, strict=True)
    )
    deliveries = AlertDelivery.objects.bulk_create(
        AlertDelivery(rule=rule, channel="email", target="ops@example.com", subject=e.subject, status="sent")
        for e in events
    )
    AlertDelivery.events.through.objects.bulk_create(
        AlertDelivery.events.through(alertdelivery_id=d.pk, alertevent_id=e.pk)
        for d, e in zip(deliveries, events, strict=True)
    )


def test_it_asks_as_many_queries_for_1000_alerts_raised_as_for_10(client, users, tmp_path):
    from alerts.models import AlertRule
    from inventory.models import VM
    from jobs.models import Job
    from policies.models import Policy

    client.force_login(users[roles.ADMIN])
    manager = build_estate(10, destination_path=str(tmp_path))
    rule = AlertRule.objects.create(policy=Policy.objects.get(name="policy0"), emails="ops@example.com")
    urls = ["/alerts/", "/alerts/?kind=failed", "/alerts/channels/", "/api/v1/alert-events/"]
    _raise_alerts(rule, list(VM.objects.order_by("pk")), list(Job.objects.order_by("vm_id")))
    small = {url: _queries(client, url)[0] for url in urls}
    build_estate(990, destination_path=str(tmp_path), start=10, manager=manager)
    _raise_alerts(rule, list(VM.objects.order_by("pk")[10:]), list(Job.objects.order_by("vm_id")[10:]))
    large = {url: _queries(client, url) for url in urls}
    assert {url: (small[url], n) for url, (n, _) in large.items() if n != small[url]} == {}
    assert "Page 1 of 10 (1000 in all)" in large["/alerts/"][1].content.decode()
    assert large["/api/v1/alert-events/"][1].json()["results"][0]["delivery"] == "E-mail sent"
