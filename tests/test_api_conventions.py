"""What every endpoint of the API does alike (issue 26, item 7): the root lists the endpoints with the
docs and the site; every POST that queues a job answers 202 with the job's URL in Location, and the
schema says so; a list refuses a query parameter it does not read (400, naming it and the known ones)
and filters by the ones it does."""

from urllib.parse import urlsplit

import pytest
from drf_spectacular.generators import SchemaGenerator

from backupsite.urls import api_router
from core import roles
from core.filters import KnownQueryParams
from core.tokens import issue_token
from inventory.models import Manager
from jobs.models import Job, Node
from policies.models import Policy
from recovery.models import FileSession, InstantRestore
from repository.models import BackupPoint
from tests.estate import build_estate
from tests.recovery.instant_helpers import make_estate, make_instant

# Lists whose rows the estate below makes with at least two names: ?name= must narrow each.
NAMED_LISTS = {
    "vms",
    "managers",
    "datacenters",
    "clusters",
    "hosts",
    "storagedomains",
    "tags",
    "disks",
    "destinations",
    "jobs",
    "policies",
    "nodes",
    "tokens",
    "instant-restores",
}


def list_prefixes() -> list[str]:
    return sorted({prefix for prefix, viewset, _ in api_router.registry if hasattr(viewset, "list")})


def results(response) -> list[dict]:
    assert response.status_code == 200, response.content
    body = response.json()
    return body["results"] if isinstance(body, dict) else body


def test_it_lists_the_endpoints_with_the_docs_and_the_site_at_the_root(api_as, client, users):
    body = api_as(roles.VIEWER).get("/api/v1/").json()
    assert set(body) == {"endpoints", "docs", "schema", "site", "tokens"}
    assert urlsplit(body["endpoints"]["vms"]).path == "/api/v1/vms/"
    assert set(body["endpoints"]) >= {"backups", "jobs", "policies", "managers", "tokens"}
    assert urlsplit(body["docs"]).path == "/api/v1/docs/" and urlsplit(body["site"]).path == "/"
    assert urlsplit(body["tokens"]).path == "/settings/tokens/"
    # In the browsable form too: the links are there to click.
    client.force_login(users[roles.VIEWER])
    page = client.get("/api/v1/", HTTP_ACCEPT="text/html").content.decode()
    assert 'href="http://testserver/api/v1/docs/"' in page and 'href="http://testserver/"' in page


@pytest.fixture
def rows(db, tmp_path, users):
    """An estate of 3 VMs (with disks, jobs, points, policies), a second engine with a point, and an
    instant restore running from it, a node, and a token of the admin's."""
    build_estate(3, destination_path=str(tmp_path / "estate"))
    (tmp_path / "instant").mkdir()
    instant = make_estate(tmp_path / "instant")
    make_instant(instant["point"], InstantRestore.Status.RUNNING)
    make_instant(instant["point"], InstantRestore.Status.DISCARDED, name="web00-gone")
    Node.objects.create(name="node-a")
    Node.objects.create(name="node-b")
    issue_token(user=users[roles.ADMIN], name="cron")
    return instant


def test_it_refuses_an_unknown_query_parameter_on_every_list(api_as, rows):
    api = api_as(roles.ADMIN)
    for prefix in list_prefixes():
        url = f"/api/v1/{prefix}/"
        response = api.get(url, {"nonsense": "1"})
        assert response.status_code == 400, (url, response.content)
        error = response.json()["error"]
        assert error["code"] == "invalid" and list(error["fields"]) == ["nonsense"], url
        assert error["message"].startswith("nonsense: This list has no filter 'nonsense'; it takes: "), url
        assert "ordering" in error["message"], url
        # Paging and the format are not filters: always taken (where the list has pages).
        paged = {"page": "1"} if "page" in error["message"] else {}
        taken = api.get(url, {**paged, "format": "json"})
        assert taken.status_code == 200, (url, taken.content)


def test_it_filters_every_named_list_by_name(api_as, rows):
    api = api_as(roles.ADMIN)
    narrowed = set()
    for prefix in list_prefixes():
        url = f"/api/v1/{prefix}/"
        every = results(api.get(url))
        names = {row.get("name") for row in every}
        if None in names or len(names) < 2:
            continue
        name = every[-1]["name"]
        found = results(api.get(url, {"name": name}))
        assert found and {row["name"] for row in found} == {name}, url
        assert len(found) < len(every), url
        narrowed.add(prefix)
    assert narrowed == NAMED_LISTS


def test_it_filters_lists_by_status_vm_and_kind(api_as, rows):
    api = api_as(roles.VIEWER)
    vm = rows["vm"]
    points = results(api.get("/api/v1/backups/", {"vm": vm.pk}))
    assert points and {p["vm"] for p in points} == {vm.pk}
    assert len(points) < len(results(api.get("/api/v1/backups/")))
    Job.objects.filter(pk=Job.objects.order_by("pk").first().pk).update(status=Job.Status.FAILED)
    failed = results(api.get("/api/v1/jobs/", {"status": "failed"}))
    assert len(failed) == 1 and failed[0]["status"] == "failed"
    running = results(api.get("/api/v1/instant-restores/", {"status": "running"}))
    assert [r["name"] for r in running] == ["web00-running"]
    # ?format= is the answer's (json, api): a disk's format is ?disk_format=.
    raw = results(api.get("/api/v1/disks/", {"disk_format": "raw", "format": "json"}))
    assert raw == [] and len(results(api.get("/api/v1/disks/", {"disk_format": "cow"}))) == 6
    refused = api.get("/api/v1/jobs/", {"status": "sleeping"})
    assert refused.status_code == 400 and list(refused.json()["error"]["fields"]) == ["status"]


def job_starting_posts(rows, tmp_path) -> list[tuple[str, dict]]:
    """Every POST that queues a job, with a body it takes over the rows above."""
    point = rows["point"]
    second = BackupPoint.objects.create(
        vm=rows["vm"], destination=rows["destination"], strategy="image_transfer", status="complete"
    )
    running = InstantRestore.objects.get(name="web00-running")
    other = make_instant(second, InstantRestore.Status.RUNNING, name="web00-other")
    policy = Policy.objects.filter(name="policy0").get()
    manager = Manager.objects.get(name="estate")
    queued = Job.objects.create(kind="sync", name="a queued sync", manager=manager)
    return [
        (f"/api/v1/vms/{rows['vm'].pk}/backup/", {"destination": rows["destination"].name, "type": "full"}),
        (f"/api/v1/backups/{point.pk}/restore/", {"name": "web00-restored"}),
        (f"/api/v1/backups/{point.pk}/verify/", {}),
        ("/api/v1/backups/verify/", {}),
        (f"/api/v1/managers/{manager.pk}/sync/", {}),
        (f"/api/v1/policies/{policy.pk}/prune/", {}),
        (f"/api/v1/policies/{policy.pk}/run/", {}),
        (f"/api/v1/backups/{point.pk}/instant-restore/", {"name": "web00-instant"}),
        (f"/api/v1/backups/{second.pk}/prove/", {}),
        (f"/api/v1/instant-restores/{running.pk}/migrate/", {"storage_domain": "data1"}),
        (f"/api/v1/instant-restores/{other.pk}/discard/", {}),
        (f"/api/v1/jobs/{queued.pk}/cancel/", {}),
    ]


def test_it_answers_every_job_starting_post_with_202_and_the_jobs_location(api_as, rows, tmp_path, names_free):
    api = api_as(roles.OPERATOR)
    for url, body in job_starting_posts(rows, tmp_path):
        response = api.post(url, body, format="json")
        assert response.status_code == 202, (url, response.content)
        location = response["Location"]
        followed = api.get(location)
        assert followed.status_code == 200, (url, location)
        if url.endswith("/run/"):  # a policy run queues a job per VM: Location lists them
            assert sorted(j["id"] for j in results(followed)) == sorted(response.json()["jobs"])
            assert response.json()["jobs"], "the policy covers VMs: its run has jobs"
        else:
            job = response.json()["job"] if "job" in response.json() else response.json()["id"]
            assert location == f"/api/v1/jobs/{job}/" and followed.json()["id"] == job, url


def test_it_answers_a_put_back_with_202_and_the_jobs_location(api_as, rows, monkeypatch):
    # Putting files back reads the backup's mounted filesystems first (tests/recovery has those
    # tests); here only the answer to the request is looked at.
    session = FileSession.objects.create(point=rows["point"], node="n1", who="someone", status="open")
    job = Job.objects.create(kind="files_put_back", name="put back", vm=rows["vm"])
    monkeypatch.setattr("recovery.file_api.request_put_back", lambda **asked: job)
    response = api_as(roles.OPERATOR).post(
        f"/api/v1/file-sessions/{session.pk}/put/", {"paths": ["/p1/etc/hostname"]}, format="json"
    )
    assert response.status_code == 202, response.content
    assert response["Location"] == f"/api/v1/jobs/{job.pk}/"


def test_it_documents_202_with_a_location_header_for_each_job_starting_post(api_as):
    schema = SchemaGenerator().get_schema(request=None, public=True)
    accepted = {
        path: operation["responses"]["202"]
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method == "post" and "202" in operation["responses"]
    }
    expected = {
        "/api/v1/vms/{id}/backup/",
        "/api/v1/backups/{id}/restore/",
        "/api/v1/backups/{id}/verify/",
        "/api/v1/backups/verify/",
        "/api/v1/managers/{id}/sync/",
        "/api/v1/policies/{id}/prune/",
        "/api/v1/policies/{id}/run/",
        "/api/v1/backups/{id}/instant-restore/",
        "/api/v1/backups/{id}/prove/",
        "/api/v1/instant-restores/{id}/migrate/",
        "/api/v1/instant-restores/{id}/discard/",
        "/api/v1/file-sessions/{id}/put/",
        "/api/v1/jobs/{id}/cancel/",
    }
    assert set(accepted) >= expected
    for path, answer in accepted.items():
        assert "Location" in answer.get("headers", {}), path
        assert answer["headers"]["Location"]["schema"]["type"] == "string", path
    # A list takes exactly the query parameters its schema documents (and ?format=).
    api = api_as(roles.ADMIN)
    for prefix in list_prefixes():
        path = f"/api/v1/{prefix}/"
        documented = {p["name"] for p in schema["paths"][path]["get"].get("parameters", []) if p["in"] == "query"}
        message = api.get(path, {"nonsense": "1"}).json()["error"]["message"]
        taken = set(message.split("it takes: ")[1].rstrip(".").split(", "))
        assert taken == documented | set(KnownQueryParams.ALWAYS), path
