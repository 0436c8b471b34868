"""The backups list (filters in the URL, paging, a destination column, no failed attempts) and a
backup's own page (its chain, disks, job, history and actions by role); the jobs list's filters."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core import roles
from jobs.models import Job
from repository.models import BackupPoint
from tests.repository.point_pages_helpers import make_chain


@pytest.fixture
def chain(db, destination_dir):
    return make_chain(destination_dir)


def _get(client, url, status=200) -> str:
    response = client.get(url)
    assert response.status_code == status, (url, response.status_code)
    return response.content.decode()


def test_it_lists_backups_with_their_destination_but_not_failed_attempts(client, users, chain):
    client.force_login(users[roles.VIEWER])
    page = _get(client, "/backups/")
    full, inc, damaged = chain["points"]
    for point in chain["points"]:
        assert f'id="point-{point.pk}"' in page and f'href="/backups/{point.pk}/"' in page
    assert f'id="point-{chain["failed"].pk}"' not in page
    assert chain["destination"].name in page and "<th>Destination</th>" in page
    assert "Disk image transfer" in page and "image_transfer<" not in page
    assert 'href="/jobs/?status=failed&amp;kind=backup"' in page


def test_it_filters_backups_by_each_control_and_keeps_them_in_the_url(client, users, chain, destination_dir):
    client.force_login(users[roles.VIEWER])
    other = make_chain(destination_dir, name="db01", manager=chain["vm"].manager)
    full, inc, damaged = chain["points"]

    def shown(query):
        page = _get(client, f"/backups/?{query}")
        return {p.pk for p in BackupPoint.objects.all() if f'id="point-{p.pk}"' in page}

    assert shown("vm=web") == {p.pk for p in chain["points"]}
    assert shown(f"status=damaged&destination={chain['destination'].pk}") == {damaged.pk, other["points"][2].pk}
    assert shown("type=full") == {full.pk, other["points"][0].pk}
    assert shown("strategy=image_transfer&vm=db01") == {p.pk for p in other["points"]}
    day = timezone.localtime(inc.started).date()
    assert shown(f"since={day}&until={day}&vm=web01") == {inc.pk}
    # The controls say what the URL says.
    page = _get(client, "/backups/?vm=db01&type=incremental")
    assert 'name="vm" value="db01"' in page and '<option value="incremental" selected>' in page
    assert '<label for="id_since">From</label>' in page and '<label for="id_until">To</label>' in page


@pytest.mark.parametrize(
    "query, words",
    [
        ("status=failed", "Select a valid choice"),
        ("destination=99999", "Select a valid choice"),
        ("since=yesterday", "Enter a valid date"),
        ("since=2026-02-02&until=2026-02-01", "ends before it starts"),
        ("type=differential", "Select a valid choice"),
        # The last day the calendar has: its end (the next midnight) is past it.
        ("until=9999-12-31", "outside the dates"),
    ],
)
def test_it_says_which_backup_filter_it_cannot_read(client, users, chain, query, words):
    client.force_login(users[roles.VIEWER])
    page = _get(client, f"/backups/?{query}", status=400)
    assert words in page and "a filter above cannot be read" in page
    assert 'class="point"' not in page


def test_it_pages_the_backups_list_keeping_its_filters(client, users, chain, destination_dir):
    client.force_login(users[roles.VIEWER])
    vm = chain["vm"]
    BackupPoint.objects.bulk_create(
        BackupPoint(vm=vm, destination=chain["destination"], strategy="image_transfer", status="complete")
        for _ in range(120)
    )
    page = _get(client, "/backups/?vm=web01")
    assert "Page 1 of 2 (123 in all)" in page and 'href="?vm=web01&amp;page=2"' in page
    assert page.count('class="point"') == 100
    assert _get(client, "/backups/?vm=web01&page=2").count('class="point"') == 23
    # A page that does not exist is said, not replaced by another one.
    assert "this list has 2 pages" in _get(client, "/backups/?vm=web01&page=3", status=404)
    for wrong in ("0", "-1", "abc", "²"):
        assert "pages are numbered from 1" in _get(client, f"/backups/?page={wrong}", status=404)
    assert "There is no page 99999: this list has 1 page." in _get(client, "/jobs/?page=99999", status=404)


def test_it_shows_a_backup_its_chain_disks_job_and_history(client, users, chain):
    client.force_login(users[roles.VIEWER])
    full, inc, damaged = chain["points"]
    page = _get(client, inc.get_absolute_url())
    assert inc.get_absolute_url() == f"/backups/{inc.pk}/"
    # Its chain: the full, this one highlighted, the one built on it; oldest first.
    chain_html = page[page.index('<ol class="chain"') : page.index("</ol>")]
    order = [chain_html.index(f'id="chain-{p.pk}"') for p in (full, inc, damaged)]
    assert order == sorted(order)
    assert f'id="chain-{inc.pk}" aria-current="true"' in chain_html
    assert "6.0\xa0GiB" in chain_html and "2\xa0min\xa010\xa0s" in chain_html and "b.qcow2 does not match" in chain_html
    assert f'href="/jobs/{inc.job_id}/"' in page
    assert page.count('class="point-disk"') == 2 and "20.0\xa0GiB" in page and "3.0\xa0GiB" in page
    assert "Disk image transfer" in page and "Filesystem-consistent" in page
    assert chain["destination"].name in page
    # Its history: written, verified, a restore asked for (with its job).
    assert "Incremental backup started" in page and "Last verified: no problem found" in page
    assert "Restore requested by otto" in page and f'href="/jobs/{chain["restore"].pk}/"' in page
    # A viewer sees no actions.
    assert 'id="point-actions"' not in page and "Restore this disk" not in page


def test_it_offers_an_operator_the_actions_of_a_backup(client, users, chain):
    client.force_login(users[roles.OPERATOR])
    full, inc, damaged = chain["points"]
    page = _get(client, full.get_absolute_url())
    for action in ('id="restore-vm"', 'id="restore-disks"', 'id="verify-point"', 'id="delete-point"'):
        assert action in page
    disk = chain["disks"][0]
    assert f"/backups/{full.pk}/restore/?what=disks&amp;disks={disk.engine_id}" in page
    # A damaged backup is verified or deleted, never restored.
    page = _get(client, damaged.get_absolute_url())
    assert 'id="verify-point"' in page and 'id="restore-vm"' not in page and "damaged" in page


def test_it_refuses_a_viewer_every_action_of_a_backup(client, users, chain):
    client.force_login(users[roles.VIEWER])
    point = chain["points"][0]
    for url in (
        f"/backups/{point.pk}/verify/",
        f"/backups/{point.pk}/delete/",
        f"/backups/{point.pk}/restore/",
        "/backups/verify/",
    ):
        assert client.post(url, {"what": "vm", "name": "x"}).status_code == 403, url
    assert BackupPoint.objects.filter(pk=point.pk, status="complete").exists()
    assert (
        not Job.objects.filter(kind__in=["verify", "restore"], created__gte=timezone.now() - timedelta(minutes=1))
        .exclude(pk=chain["restore"].pk)
        .exists()
    )


def test_it_filters_the_jobs_list_by_status_kind_age_and_policy(client, users, chain):
    from policies.models import Policy

    client.force_login(users[roles.VIEWER])
    policy = Policy.objects.create(name="nightly-prod", destination=chain["destination"])
    old = Job.objects.create(kind="backup", name="old failure", status=Job.Status.FAILED)
    Job.objects.filter(pk=old.pk).update(created=timezone.now() - timedelta(days=10))
    by_policy = Job.objects.create(kind="backup", name="policy failure", status=Job.Status.FAILED, started_by=policy)
    sync = Job.objects.create(kind="sync", name="sync failure", status=Job.Status.FAILED)

    def shown(query):
        page = _get(client, f"/jobs/?{query}")
        return {j.pk for j in Job.objects.all() if f'id="job-{j.pk}"' in page}

    failed_backup = chain["failed"].job_id
    assert shown("status=failed&kind=backup") == {old.pk, by_policy.pk, failed_backup}
    assert shown("status=failed&kind=backup&since=24h") == {by_policy.pk, failed_backup}
    assert shown("status=failed&kind=backup&since=30d") == {old.pk, by_policy.pk, failed_backup}
    assert shown(f"status=failed&kind=backup&since=7d&policy={policy.pk}") == {by_policy.pk}
    assert sync.pk in shown("status=failed")
    page = _get(client, f"/jobs/?status=failed&kind=backup&since=24h&policy={policy.pk}")
    assert '<option value="24h" selected>' in page and f'<option value="{policy.pk}" selected>nightly-prod' in page
    assert '<label for="id_kind">Kind</label>' in page


@pytest.mark.parametrize("query", ["status=broken", "kind=nonsense", "since=2w", "policy=abc", "policy=99999"])
def test_it_answers_400_to_a_jobs_filter_it_cannot_read(client, users, chain, query):
    client.force_login(users[roles.VIEWER])
    page = _get(client, f"/jobs/?{query}", status=400)
    assert "Select a valid choice" in page and "a filter above cannot be read" in page
