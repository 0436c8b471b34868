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
