"""Instant restore through the API over sample rows: list and read, boot a point (202, the job in
Location, the instant restore in the body), prove one, migrate, discard; what the workflow refuses in
its words (409), invalid input (400), viewers 403 on every POST; the schema documents it all."""

import pytest

from core import roles
from jobs.models import Job
from recovery.models import InstantRestore
from tests.recovery.instant_helpers import audited, job_of, make_estate, make_instant, queued

Status = InstantRestore.Status


@pytest.fixture
def estate(db, destination_dir):
    return make_estate(destination_dir)


def test_it_lists_and_reads_instant_restores(api_as, estate):
    running = make_instant(estate["point"], Status.RUNNING)
    proof = make_instant(
        estate["point"], Status.DISCARDED, name="proof-web00-1", purpose="proof", proof_ok=True, proof_answer="up",
        cluster="Proofs",
    )  # fmt: skip
    job_of(running)
    api = api_as(roles.VIEWER)
    listed = api.get("/api/v1/instant-restores/").json()
    assert [r["id"] for r in listed["results"]] == [proof.pk, running.pk]
    assert [r["id"] for r in api.get("/api/v1/instant-restores/", {"purpose": "proof"}).json()["results"]] == [proof.pk]
    assert [r["id"] for r in api.get("/api/v1/instant-restores/", {"status": "running"}).json()["results"]] == [
        running.pk
    ]
    in_proofs = api.get("/api/v1/instant-restores/", {"cluster": "Proofs"}).json()["results"]
    assert [r["id"] for r in in_proofs] == [proof.pk]
    body = api.get(f"/api/v1/instant-restores/{running.pk}/").json()
    assert body == {
        "id": running.pk,
        "point": estate["point"].pk,
        "vm": estate["vm"].pk,
        "vm_name": "web00",
        "purpose": "restore",
        "name": "web00-running",
        "cluster": "Production",
        "migrate_to": "",
        "node": running.node,
        "status": "running",
        "step": "Running from the backup",
        "error": "",
        "who": "operator-user",
        "created": body["created"],
        "up_at": body["up_at"],
        "seconds_to_up": 42.5,
        "ended": None,
        "share": "127.0.0.1:/backups/.instant/running",
        "storage_domain_name": "instant-x",
        "vm_engine_id": "44444444-0000-0000-0000-000000000001",
        "disks": running.disks,
        "top_bytes": 3 * 1024**3 // 2,
        "proof_ok": None,
        "proof_answer": "",
    }
    assert "directory" not in body and "claim" not in body, "the node's paths and tokens are not shown"
    assert api.get("/api/v1/instant-restores/999999/").json()["error"]["code"] == "not_found"


def test_it_boots_a_point_and_answers_202_with_the_job_in_location(api_as, users, estate, names_free):
    point = estate["point"]
    api = api_as(roles.OPERATOR)
    response = api.post(
        f"/api/v1/backups/{point.pk}/instant-restore/", {"name": "web00-back", "migrate_to": "data1"}, format="json"
    )
    assert response.status_code == 202, response.content
    instant = InstantRestore.objects.get(name="web00-back")
    job = queued("instant_restore", instant)
    assert response["Location"] == f"/api/v1/jobs/{job.pk}/"
    body = response.json()
    assert (body["job"], body["status"]) == (job.pk, "queued")
    got = body["instant_restore"]
    assert (got["id"], got["status"], got["cluster"], got["migrate_to"], got["who"]) == (
        instant.pk,
        "booting",
        "Production",  # the VM's own
        "data1",
        "operator-user",
    )
    assert job.origin == Job.Origin.API and job.owner == users[roles.OPERATOR]
    assert audited() == [("instant_restore_requested", {"job": job.pk, "instant": instant.pk})]

    # The workflow's refusals, in its words: 409.
    again = api.post(f"/api/v1/backups/{point.pk}/instant-restore/", {"name": "web00-back"}, format="json")
    assert again.status_code == 409
    assert again.json()["error"] == {
        "status": 409,
        "code": "conflict",
        "message": f"{instant} already boots a VM named web00-back: choose another name.",
        "fields": {},
    }
    point.status = "failed"
    point.save()
    failed = api.post(f"/api/v1/backups/{point.pk}/instant-restore/", {"name": "other"}, format="json")
    assert failed.status_code == 409
    assert failed.json()["error"]["message"] == f"Backup {point.pk} is failed: only a complete backup boots."
    # Invalid input: 400 naming the field.
    for asked, field in [({}, "name"), ({"name": "web 00"}, "name"), ({"name": "x" * 65}, "name")]:
        bad = api.post(f"/api/v1/backups/{point.pk}/instant-restore/", asked, format="json")
        assert bad.status_code == 400 and field in bad.json()["error"]["fields"], bad.content
    assert Job.objects.count() == 1


def test_it_proves_a_point_boots(api_as, estate):
    point = estate["point"]
    api = api_as(roles.ADMIN)
    response = api.post(f"/api/v1/backups/{point.pk}/prove/", {}, format="json")
    assert response.status_code == 202, response.content
    proof = InstantRestore.objects.get(purpose="proof")
    job = queued("restore_proof", proof)
    assert response["Location"] == f"/api/v1/jobs/{job.pk}/"
    assert response.json()["instant_restore"]["name"] == f"proof-web00-{point.pk}"
    assert audited()[-1] == ("restore_proof_requested", {"job": job.pk, "instant": proof.pk})
    # The VM's cluster unknown and none named: said.
    estate["vm"].cluster = None
    estate["vm"].save()
    proof.status = Status.DISCARDED
    proof.save()
    refused = api.post(f"/api/v1/backups/{point.pk}/prove/", {}, format="json")
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == "VM web00's cluster is not known: name the cluster to boot it in."


def test_it_migrates_and_discards_through_the_api(api_as, estate):
    running = make_instant(estate["point"], Status.RUNNING)
    failed = make_instant(estate["point"], Status.FAILED)
    done = make_instant(estate["point"], Status.DONE)
    api = api_as(roles.OPERATOR)
    url = f"/api/v1/instant-restores/{running.pk}/"

    assert api.post(f"{url}migrate/", {}, format="json").json()["error"]["fields"] == {
        "storage_domain": ["This field is required."]
    }
    response = api.post(f"{url}migrate/", {"storage_domain": "data2"}, format="json")
    assert response.status_code == 202, response.content
    job = queued("instant_migrate", running)
    assert response["Location"] == f"/api/v1/jobs/{job.pk}/"
    assert response.json()["instant_restore"]["migrate_to"] == "data2"
    busy = api.post(f"{url}discard/")
    assert busy.status_code == 409
    assert busy.json()["error"]["message"] == (
        f"Instant restore migration job {job.pk} is already at work on {running}: wait for it to end."
    )

    response = api.post(f"/api/v1/instant-restores/{failed.pk}/discard/")
    assert response.status_code == 202
    assert response["Location"] == f"/api/v1/jobs/{queued('instant_discard', failed).pk}/"

    for action, asked, words in [
        ("migrate", {"storage_domain": "data1"}, f"{done} is done: only one running from its backup migrates."),
        ("discard", {}, f"{done} is done: there is nothing to discard."),
    ]:
        refused = api.post(f"/api/v1/instant-restores/{done.pk}/{action}/", asked, format="json")
        assert refused.status_code == 409 and refused.json()["error"]["message"] == words
    assert [a for a, _ in audited()] == ["instant_migrate_requested", "instant_discard_requested"]


def test_it_refuses_viewers_every_post_of_instant_restore(api_as, estate):
    running = make_instant(estate["point"], Status.RUNNING)
    api = api_as(roles.VIEWER)
    assert api.get("/api/v1/instant-restores/").status_code == 200
    for url, body in [
        (f"/api/v1/backups/{estate['point'].pk}/instant-restore/", {"name": "x"}),
        (f"/api/v1/backups/{estate['point'].pk}/prove/", {}),
        (f"/api/v1/instant-restores/{running.pk}/migrate/", {"storage_domain": "data1"}),
        (f"/api/v1/instant-restores/{running.pk}/discard/", {}),
    ]:
        response = api.post(url, body, format="json")
        assert response.status_code == 403 and response.json()["error"]["status"] == 403, url
    assert not Job.objects.exists() and not audited()


def test_it_documents_instant_restore_in_the_schema(api_as):
    schema = api_as(roles.VIEWER).get("/api/v1/schema/", {"format": "json"}).json()
    paths = schema["paths"]
    boot = paths["/api/v1/backups/{id}/instant-restore/"]["post"]
    assert set(boot["responses"]) >= {"202", "400", "403", "404", "409"}
    assert boot["responses"]["202"]["headers"]["Location"]["schema"]["type"] == "string"
    accepted = boot["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    assert set(schema["components"]["schemas"][accepted]["properties"]) == {"job", "status", "instant_restore"}
    assert boot["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/InstantRequest")
    for path in (
        "/api/v1/backups/{id}/prove/",
        "/api/v1/instant-restores/{id}/migrate/",
        "/api/v1/instant-restores/{id}/discard/",
    ):
        assert {"202", "403", "409"} <= set(paths[path]["post"]["responses"]), path
        assert "Location" in paths[path]["post"]["responses"]["202"]["headers"], path
    assert {"get"} == set(paths["/api/v1/instant-restores/"]) == set(paths["/api/v1/instant-restores/{id}/"])
    fields = schema["components"]["schemas"]["InstantRestore"]["properties"]
    assert "top_bytes" in fields and "claim" not in fields and "directory" not in fields
