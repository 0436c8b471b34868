"""Instant restore's pages over sample rows: the list (each state with the actions it allows), one's
page (disks, jobs), the form on a backup point, migrate and discard, the VM page's instant restores and
last restore proof; the jobs the requests queue; viewers read but act nowhere. The engine side (what
the jobs do) has tests of its own."""

import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from core import roles
from jobs.models import Job
from recovery.instant.upkeep import keep_instant_restores_here
from recovery.models import InstantRestore
from tests.recovery.instant_helpers import DISKS, GiB, audited, job_of, make_estate, make_instant, queued

Status = InstantRestore.Status


@pytest.fixture
def estate(db, destination_dir):
    return make_estate(destination_dir)


@pytest.fixture
def every_state(estate) -> dict[str, InstantRestore]:
    rows = {status: make_instant(estate["point"], status) for status in Status.values}
    rows["failed-tidied"] = make_instant(estate["point"], Status.FAILED, name="web00-gone", tidied=True)
    return rows


def row_of(page: str, instant: InstantRestore) -> str:
    return re.search(rf'<tr class="instant-restore [a-z]+" id="instant-{instant.pk}">.*?</tr>', page, re.S).group(0)


def test_it_lists_instant_restores_in_each_state_with_the_actions_it_allows(client, users, every_state):
    client.force_login(users[roles.OPERATOR])
    page = client.get("/instant/").content.decode()
    assert 'href="/instant/" class="on" aria-current="page">Instant</a>' in page  # the site menu
    rows = {key: row_of(page, instant) for key, instant in every_state.items()}
    # Active ones first (newest first), then the ended ones.
    order = [int(pk) for pk in re.findall(r'<tr class="instant-restore [a-z]+" id="instant-(\d+)">', page)]
    active = [i.pk for i in every_state.values() if i.is_active]
    assert set(order[: len(active)]) == set(active)

    running = rows[Status.RUNNING]
    assert '<span class="status running">Running from backup</span>' in running
    link = f'<a href="/instant/{every_state[Status.RUNNING].pk}/" class="nowrap">web00-running</a>'
    assert f"{link}<br><small>from web00</small>" in running
    point = every_state[Status.RUNNING].point
    assert f'href="/inventory/vms/{point.vm_id}/#point-{point.pk}">#{point.pk}</a>' in running
    assert "<td>Instant restore</td>" in running and "3 h ago" in running
    assert "42\xa0s" in running and "1.5\xa0GiB" in running and "Running from the backup" in running
    # Migrate: the data domains of the VM's data center, not another's, an export domain or an
    # instant restore's own temporary domain.
    options = re.findall(r'<option value="([^"]+)" title="([^"]+)"[^>]*>([^<]+)</option>', running)
    assert options == [
        ("data1", "data1 (NFS, 500.0 GiB free)", "data1"),
        ("data2", "data2 (iSCSI, 2.0 TiB free)", "data2"),
    ]
    assert "Migrate</button>" in running and "Discard</button>" in running

    booting = rows[Status.BOOTING]
    assert "Importing storage domain from" in booting and '<td class="when">—</td>' in booting
    assert "Migrate</button>" not in booting and "Discard</button>" not in booting
    assert "Discard</button>" in rows[Status.DISCARDING] and "Migrate</button>" not in rows[Status.DISCARDING]
    for key in (Status.MIGRATING, Status.DONE, Status.DISCARDED, "failed-tidied"):
        assert "</button>" not in rows[key], key
    failed = rows[Status.FAILED]
    assert '<span class="error">VM web00-failed went down instead of up' in failed and "Discard</button>" in failed
    assert '<span class="status done">Done</span>' in rows[Status.DONE]

    # Restore proofs alone, and viewers: the same rows, no actions.
    proof = make_instant(every_state[Status.RUNNING].point, Status.DISCARDED, name="proof-web00-1", purpose="proof")
    listed = client.get("/instant/", {"purpose": "proof"}).content.decode()
    assert re.findall(r'id="instant-(\d+)"', listed) == [str(proof.pk)]
    client.force_login(users[roles.VIEWER])
    page = client.get("/instant/").content.decode()
    assert 'href="/instant/"' in page and "web00-running" in page and "</button></form>" not in page.split("<main")[1]


@pytest.mark.parametrize("status", [*Status.values, "failed-tidied"])
def test_it_shows_an_instant_restores_page_in_each_state(client, users, every_state, status):
    instant = every_state[status]
    boot = job_of(instant, status=Job.Status.SUCCEEDED)
    later = job_of(instant, kind="instant_discard", status=Job.Status.RUNNING)
    client.force_login(users[roles.OPERATOR])
    response = client.get(f"/instant/{instant.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert f'<span class="status {instant.status}" id="instant-status">{instant.get_status_display()}</span>' in page
    assert f"<h1>{instant.name} <small>instant restore {instant.pk}</small>" in page
    jobs = re.findall(r'<a href="/jobs/(\d+)/">', page)
    assert jobs == [str(later.pk), str(boot.pk)]  # newest first, each to its log
    assert "Instant restore discard" in page
    if instant.disks:
        disk = re.search(r'<tr class="instant-disk">.*?</tr>', page, re.S).group(0)
        assert "<td>web01_os</td><td>20.0\xa0GiB</td>" in disk and "was 11111111-0000-0000-0000-000000000001" in disk
        assert "<td>2</td>" in disk  # the backup's files its chain reads
    else:
        assert "Not laid out yet." in page
    actions = page.split('id="instant-actions"')[1].split("<h2>")[0] if 'id="instant-actions"' in page else ""
    assert ("Migrate</button>" in actions) == (status == Status.RUNNING)
    assert ("Discard</button>" in actions) == (status in (Status.RUNNING, Status.DISCARDING, Status.FAILED))
    if instant.error:
        assert f'<p class="flash error" id="instant-error">{instant.error}' in page.replace("&#x27;", "'")


def test_it_boots_a_point_from_its_form_and_says_what_is_refused(client, users, estate, names_free):
    point = estate["point"]
    client.force_login(users[roles.OPERATOR])
    listing = client.get("/backups/").content.decode()
    assert f'<a href="/backups/{point.pk}/instant/" class="instant-restore">Instant restore…</a>' in listing
    restore = client.get(f"/backups/{point.pk}/restore/").content.decode()
    assert f'href="/backups/{point.pk}/instant/" id="instant-instead">Instant restore…</a>' in restore

    form = client.get(f"/backups/{point.pk}/instant/").content.decode()
    assert 'name="name" value="web00-instant"' in form
    assert '<option value="" selected>The VM\'s own (Production)</option>' in form.replace("&#x27;", "'")
    migrate_to = re.search(r'<select name="migrate_to".*?</select>', form, re.S).group(0)
    assert re.findall(r'<option value="([^"]*)"', migrate_to) == ["", "data1", "data2"]

    response = client.post(
        f"/backups/{point.pk}/instant/", {"name": "web00-back", "cluster": "Production", "migrate_to": "data2"}
    )
    instant = InstantRestore.objects.get(name="web00-back")
    assert response.status_code == 302 and response["Location"] == f"/instant/{instant.pk}/"
    assert (instant.status, instant.migrate_to, instant.who, instant.claim is not None) == (
        Status.BOOTING,
        "data2",
        "operator-user",
        True,
    )
    job = queued("instant_restore", instant)
    assert job.origin == Job.Origin.PAGE and job.owner == users[roles.OPERATOR]
    page = client.get(response["Location"]).content.decode()
    assert f"VM web00-back is booting from backup {point.pk} (job {job.pk})." in page

    # Refused: in words on the form, nothing queued.
    again = client.post(f"/backups/{point.pk}/instant/", {"name": "web00-back", "cluster": "", "migrate_to": ""})
    assert again.status_code == 200
    assert f"{instant} already boots a VM named web00-back: choose another name." in again.content.decode()
    bad = client.post(f"/backups/{point.pk}/instant/", {"name": "web 00", "cluster": "", "migrate_to": ""})
    assert "The engine takes a VM name of at most 64 letters, digits, &#x27;-&#x27;" in bad.content.decode()
    assert Job.objects.count() == 1

    # A restore proof from the same page: its own name, purpose and job.
    response = client.post(f"/backups/{point.pk}/prove/", {"cluster": ""})
    proof = InstantRestore.objects.get(purpose=InstantRestore.Purpose.PROOF)
    assert response["Location"] == f"/instant/{proof.pk}/" and proof.name == f"proof-web00-{point.pk}"
    queued("restore_proof", proof)
    assert [action for action, _ in audited()] == ["instant_restore_requested", "restore_proof_requested"]
    assert audited()[0][1] == {"job": job.pk, "instant": instant.pk}


def test_it_migrates_and_discards_from_the_pages_and_refuses_what_the_state_does_not_allow(client, users, every_state):
    client.force_login(users[roles.OPERATOR])
    running = every_state[Status.RUNNING]
    response = client.post(f"/instant/{running.pk}/migrate/", {"storage_domain": "data2", "next": "/instant/"})
    assert response.status_code == 302 and response["Location"] == "/instant/"
    job = queued("instant_migrate", running)
    running.refresh_from_db()
    assert running.migrate_to == "data2" and job.origin == Job.Origin.PAGE
    # One job at a time: a discard asked meanwhile is refused in words.
    response = client.post(f"/instant/{running.pk}/discard/", follow=True)
    assert response.redirect_chain == [(f"/instant/{running.pk}/", 302)]
    assert f"Instant restore migration job {job.pk} is already at work on {running}" in response.content.decode()

    failed = every_state[Status.FAILED]
    response = client.post(f"/instant/{failed.pk}/discard/", {"next": "/instant/"}, follow=True)
    discard = queued("instant_discard", failed)
    assert f"VM web00-failed is being stopped and removed (job {discard.pk})." in response.content.decode()

    done = every_state[Status.DONE]
    response = client.post(f"/instant/{done.pk}/migrate/", {"storage_domain": "data1"}, follow=True)
    assert f"{done} is done: only one running from its backup migrates." in response.content.decode()
    response = client.post(f"/instant/{done.pk}/discard/", follow=True)
    assert f"{done} is done: there is nothing to discard." in response.content.decode()
    response = client.post(f"/instant/{every_state['failed-tidied'].pk}/discard/", follow=True)
    assert "is failed: there is nothing to discard." in response.content.decode()
    assert [(a, d["instant"]) for a, d in audited()] == [
        ("instant_migrate_requested", running.pk),
        ("instant_discard_requested", failed.pk),
    ]
    assert audited()[0][1]["to"] == "data2"
    # An unknown target elsewhere is not followed.
    response = client.post(f"/instant/{done.pk}/discard/", {"next": "https://elsewhere.example/"})
    assert response["Location"] == f"/instant/{done.pk}/"


def test_it_refuses_viewers_every_action_of_instant_restore(client, users, every_state):
    point = every_state[Status.RUNNING].point
    client.force_login(users[roles.VIEWER])
    assert "Instant restore…" not in client.get("/backups/").content.decode()
    assert client.get(f"/instant/{every_state[Status.RUNNING].pk}/").status_code == 200
    for method, url in [
        ("get", f"/backups/{point.pk}/instant/"),
        ("post", f"/backups/{point.pk}/instant/"),
        ("post", f"/backups/{point.pk}/prove/"),
        ("post", f"/instant/{every_state[Status.RUNNING].pk}/migrate/"),
        ("post", f"/instant/{every_state[Status.RUNNING].pk}/discard/"),
    ]:
        assert getattr(client, method)(url).status_code == 403, url
    assert not Job.objects.exists() and not audited()


def test_it_shows_a_vms_instant_restores_and_its_last_restore_proof(client, users, estate):
    vm, point = estate["vm"], estate["point"]
    client.force_login(users[roles.VIEWER])
    url = reverse("vm-detail", args=[vm.pk])
    page = client.get(url).content.decode()
    assert "Never proven" in page and "Instant restores" not in page
    assert f'<tr class="point" id="point-{point.pk}">' in page  # what the instant restores' backup links open

    make_instant(point, Status.RUNNING)
    make_instant(
        point,
        Status.DISCARDED,
        name="proof-web00-a",
        purpose="proof",
        proof_ok=True,
        proof_answer="guest agent answered: web00.example, Debian 12",
        seconds_to_up=37.26,
    )
    page = client.get(url).content.decode()
    proof = re.search(r'<p id="restore-proof">.*?</p>', page, re.S).group(0)
    assert '<span class="good">Booted</span>' in proof and "in 37\xa0s" in proof
    assert "guest agent answered: web00.example, Debian 12" in proof and "3 h ago" in proof
    assert "web00-running" in page and '<span class="status running">Running from backup</span>' in page

    an_hour_ago = timezone.now() - timedelta(hours=1)
    make_instant(
        point,
        Status.FAILED,
        name="proof-web00-b",
        purpose="proof",
        proof_ok=False,
        error="VM went down",
        created=an_hour_ago,
    )
    make_instant(point, Status.BOOTING, name="proof-web00-c", purpose="proof", created=timezone.now())
    page = client.get(url).content.decode()
    proof = re.search(r'<p id="restore-proof">.*?</p>', page, re.S).group(0)
    assert '<span class="bad">Failed</span>' in proof and '<span class="bad">VM went down</span>' in proof
    assert "1 h ago" in proof
    assert f"Proving backup #{point.pk} boots now: Importing storage domain" in proof


def test_it_lists_instant_restores_in_as_many_queries_whatever_their_number(
    client, users, estate, tmp_path, django_assert_max_num_queries
):
    """Each row's actions (the data domains to migrate to) are read for all rows at once."""
    client.force_login(users[roles.OPERATOR])

    def add(point, count):
        for k in range(count):
            make_instant(point, Status.values[k % len(Status.values)], name=f"{point.vm.name}-{k}")

    def listed() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get("/instant/").status_code == 200
        return len(queries)

    add(estate["point"], 3)
    few = listed()
    add(make_estate(tmp_path, n=1)["point"], 30)  # and another engine's
    add(estate["point"], 10)
    assert listed() == few
    with django_assert_max_num_queries(10):
        client.get("/instant/")


def test_it_records_what_the_top_layers_take_at_the_nodes_heartbeat(db, estate, tmp_path, settings):
    root = tmp_path / ".instant" / "7"
    running = make_instant(estate["point"], Status.RUNNING, directory=str(root), top_bytes=0)
    disk = running.disks[0]
    top = root / "55555555-0000-0000-0000-000000000001" / "images" / disk["image_id"] / disk["volume_id"]
    top.parent.mkdir(parents=True)
    top.write_bytes(b"\1" * 1024 * 1024)
    elsewhere = make_instant(estate["point"], Status.RUNNING, name="there", directory=str(root), node="other-node")
    gone = make_instant(
        estate["point"], Status.BOOTING, name="gone", directory=str(tmp_path / "nothing"), disks=DISKS, top_bytes=5
    )

    keep_instant_restores_here()

    running.refresh_from_db()
    assert running.top_bytes == Path(top).stat().st_blocks * 512 >= 1024 * 1024
    elsewhere.refresh_from_db()
    gone.refresh_from_db()
    assert (elsewhere.top_bytes, gone.top_bytes) == (3 * GiB // 2, 5)  # another node's; a directory not there
