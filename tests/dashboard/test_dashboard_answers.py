"""The dashboard's answers (dashboard.answers, policies.rpo) on rows made here, and the lists they link to."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core import roles
from dashboard import answers
from inventory.models import VM
from jobs.models import Job
from policies import rpo
from policies.models import Policy
from tests.dashboard.sample import GIB, build_sample
from tests.estate import build_estate

pytestmark = pytest.mark.django_db


@pytest.fixture
def sample(tmp_path):
    now = timezone.now()
    return build_sample(tmp_path, now) | {"now": now}


def test_it_derives_a_policys_rpo_from_its_schedule(sample):
    nas = sample["nas"]
    assert rpo.longest_gap("0 1 * * *") == timedelta(hours=24)
    assert rpo.longest_gap("0 1 * * 1-5") == timedelta(hours=72)  # Friday to Monday
    assert rpo.longest_gap("0 */6 * * *") == timedelta(hours=6)
    assert rpo.longest_gap("0 3 1 * *") == timedelta(days=31)
    assert rpo.rpo_of(sample["nightly"]) == timedelta(hours=26)
    windowed = Policy(name="w", destination=nas, schedule="0 22 * * *")
    windowed.window_start, windowed.window_end = datetime(2026, 1, 1, 22).time(), datetime(2026, 1, 1, 4).time()
    assert rpo.rpo_of(windowed) == timedelta(hours=24 + 2 + 6)  # the window wraps midnight


def test_it_classifies_each_vm_against_its_policys_rpo(sample):
    rows = dict(
        rpo.rpo_status_of_vms(VM.objects.all(), now=sample["now"]).values_list("name", "rpo_status").order_by("name")
    )
    # db01's good backup is 20 h old, within the RPO, but its last attempt failed: failing wins.
    assert rows == {"app01": "uncovered", "db01": "failing", "old01": "stale", "web01": "ok", "web02": "ok"}
    assert rpo.rpo_counts(VM.objects.all(), now=sample["now"]) == {"ok": 2, "stale": 1, "failing": 1, "uncovered": 1}
    # Time passes: 22 h later web01's 5 h old backup is 27 h old, past the 26 h RPO.
    later = rpo.rpo_counts(VM.objects.all(), now=sample["now"] + timedelta(hours=22))
    assert later == {"ok": 0, "stale": 3, "failing": 1, "uncovered": 1}
    db01 = rpo.rpo_status_of_vms(VM.objects.filter(name="db01")).get()
    assert (db01.last_attempt_status, db01.last_attempt_job) == ("failed", sample["failed"].pk)
    assert "storage domain sd1 is full" in db01.last_attempt_error


def test_it_gives_the_api_the_rpo_status_the_pages_show(client, make_user, sample):
    """db01's newest point is complete (the API's last_backup_status says so) but its last attempt
    failed: the API says failing, as the dashboard and the inventory do."""
    client.force_login(make_user(roles.VIEWER, "vic"))
    body = client.get("/api/v1/vms/", {"ordering": "name"}).json()
    rows = {v["name"]: v for v in body["results"]}
    assert {n: v["rpo_status"] for n, v in rows.items()} == {
        "app01": "uncovered", "db01": "failing", "old01": "stale", "web01": "ok", "web02": "ok",
    }  # fmt: skip
    db01 = rows["db01"]
    assert db01["last_backup_status"] == "complete" and db01["rpo_status_label"] == "Failing (last backup failed)"
    assert (db01["last_attempt_status"], db01["last_attempt_job"]) == ("failed", sample["failed"].pk)
    assert rows["app01"]["last_good_backup"] is None and rows["web01"]["last_good_backup"]
    failing = client.get("/api/v1/vms/", {"rpo_status": "failing"}).json()["results"]
    assert [v["name"] for v in failing] == ["db01"]
    refused = client.get("/api/v1/vms/", {"rpo_status": "late"})
    assert refused.status_code == 400 and "rpo_status" in refused.content.decode()


def test_it_tells_the_last_24_hours_per_policy(sample):
    policies = list(Policy.objects.order_by("priority", "name"))
    days = {d.policy.name: d for d in answers.last_day(now=sample["now"], policies=policies)}
    nightly = days["nightly-prod"]
    assert nightly.summary == "nightly-prod: 2 of 4 VMs OK"
    assert (nightly.ok, nightly.skipped, nightly.active) == (2, 1, 0)
    assert [(f["vm"], f["error"]) for f in nightly.failed] == [("db01", "Snapshot failed: storage domain sd1 is full")]
    assert days["weekly-archive"].vms == 0


def test_it_counts_backup_jobs_per_day_in_the_sites_time_zone(sample, settings):
    settings.TIME_ZONE = "Asia/Tokyo"  # UTC+9, no summer time
    # 23:30 UTC on 2026-03-01 is 08:30 on 2026-03-02 in Tokyo.
    now = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
    Job.objects.all().delete()
    Job.objects.create(kind="backup", status="failed", created=datetime(2026, 3, 1, 23, 30, tzinfo=UTC))
    Job.objects.create(kind="backup", status="succeeded", created=datetime(2026, 3, 1, 14, 0, tzinfo=UTC))
    Job.objects.create(kind="backup", status="succeeded", created=datetime(2026, 2, 20, 14, 0, tzinfo=UTC))
    charts = answers.job_charts(now=now)
    week = charts[7]["chart"]
    assert [row[0] for row in week.rows][-2:] == ["2026-03-02", "2026-03-03"]
    by_day = {row[0]: row[1:] for row in week.rows}  # succeeded, failed, skipped, total
    assert by_day["2026-03-02"] == ["0", "1", "0", "1"]
    assert by_day["2026-03-01"] == ["1", "0", "0", "1"]
    assert len(charts[30]["chart"].rows) == 30
    assert {t["status"]: t["count"] for t in charts[30]["totals"]} == {"succeeded": 2, "failed": 1, "skipped": 0}
    assert {t["status"]: t["count"] for t in charts[7]["totals"]} == {"succeeded": 1, "failed": 1, "skipped": 0}


def test_it_tells_each_destinations_own_use_its_growth_and_when_it_is_full(sample):
    uses = {u.destination.name: u for u in answers.storage(now=sample["now"])}
    nas, tape = uses["nas"], uses["tape"]
    assert nas.used == 8 * GIB + GIB // 2  # the kept backups, the damaged one included
    assert nas.damaged == 1
    assert nas.growth == nas.used  # every kept backup finished within the 30 days
    assert round(nas.days_until_full) == round(100 / (8.5 / 30))  # 353 days
    # The chart's last day is today's use; before the first backup, nothing.
    values = [row[1] for row in nas.chart.rows]
    assert values[-1] == "8.5 GiB" and values[0] == "0 bytes" and len(values) == 30
    assert tape.used == 0 and tape.days_until_full is None
    assert "No data" in str(tape.chart)


def test_it_lists_next_runs_from_the_schedules_own_code(sample):
    policies = list(Policy.objects.all())
    covered = rpo.rpo_counts_by_policy(VM.objects.all(), now=sample["now"])
    runs = answers.next_runs(now=sample["now"], policies=policies, covered=covered)
    assert [(r["policy"].name, r["at"], r["vms"]) for r in runs] == sorted(
        [
            ("nightly-prod", sample["nightly"].next_run(after=sample["now"]), 4),
            ("weekly-archive", sample["weekly"].next_run(after=sample["now"]), 0),
        ],
        key=lambda r: r[1],
    )
    assert not any(r["outside_window"] for r in runs)
    # A policy saved before schedules were checked against windows: its 01:00 run is not started.
    old_window = Policy.objects.create(name="old-window", destination=sample["nas"], schedule="0 1 * * *")
    Policy.objects.filter(pk=old_window.pk).update(
        window_start=datetime(2026, 1, 1, 2).time(), window_end=datetime(2026, 1, 1, 3).time()
    )
    runs = answers.next_runs(now=sample["now"], policies=list(Policy.objects.all()), covered=covered)
    assert [r["outside_window"] for r in runs if r["policy"].name == "old-window"] == [True]


def test_it_shows_the_answers_as_links_to_the_lists_behind_them(client, make_user, sample):
    client.force_login(make_user(roles.VIEWER, "vic"))
    page = client.get("/").content.decode()
    for status, n in {"ok": 2, "stale": 1, "failing": 1, "uncovered": 1}.items():
        assert f'id="rpo-{status}" href="/inventory/?rpo={status}"><b>{n}</b>' in page
    assert "nightly-prod: 2 of 4 VMs OK" in page and "Snapshot failed: storage domain sd1 is full" in page
    assert "weekly-archive</a>: no backup in the last 24 hours" in page
    assert 'id="count-damaged">1<' in page and "1 damaged backup<" in page
    assert "never at this rate" in page and "353 days at this rate" in page
    assert page.count('<g class="day">') == 7 + 30
    assert "1 VMs" not in page and "0 VM<" not in page
    # The lists behind the answers show those rows and only those.
    listed = client.get("/inventory/?rpo=failing").content.decode()
    assert ">db01<" in listed and ">web01<" not in listed
    listed = client.get("/inventory/?rpo=ok").content.decode()
    assert ">web01<" in listed and ">web02<" in listed and ">db01<" not in listed
    nightly = sample["nightly"].pk
    jobs = client.get(f"/jobs/?status=failed&kind=backup&since=24h&policy={nightly}").content.decode()
    assert jobs.count('class="status failed"') == 1
    assert re.search(rf'<option value="{nightly}" selected>nightly-prod</option>', jobs)  # the filter shown as set
    damaged = client.get(f"/backups/?status=damaged&destination={sample['nas'].pk}").content.decode()
    assert damaged.count('class="status damaged"') == 1
    assert (
        client.get(f"/backups/?status=damaged&destination={sample['tape'].pk}")
        .content.decode()
        .count('class="status damaged"')
        == 0
    )


def test_it_links_the_last_24_hours_counts_to_lists_of_as_many_jobs(client, make_user, sample):
    """web02 failed and was then backed up: the dashboard does not count it as failed,
    and the list its "failed" link opens does not show that failure either; the jobs list without
    the dashboard's "Each VM's newest of each kind" still has every failure."""
    from django.contrib.contenttypes.models import ContentType

    client.force_login(make_user(roles.VIEWER, "vic"))
    nightly = sample["nightly"]
    web02, policy_type = VM.objects.get(name="web02"), ContentType.objects.get_for_model(Policy)
    for status, error in [(Job.Status.FAILED, "retried later"), (Job.Status.SUCCEEDED, "")]:
        Job.objects.create(
            kind="backup", vm=web02, name="web02", status=status, error=error,
            started_by_type=policy_type, started_by_id=nightly.pk,
        )  # fmt: skip
    page = client.get("/").content.decode()
    day = page.split(f'id="day-policy-{nightly.pk}"')[1].split("</li>")[0]
    failed_link = re.search(r'href="([^"]+)">(\d+) failed</a>', day)
    summary_link = re.search(r'class="summary" href="([^"]+)">nightly-prod: 2 of 4 VMs OK<', day)
    assert failed_link and summary_link and failed_link[2] == "1" and "retried later" not in page

    def listed(url: str) -> list[str]:
        jobs = client.get(url.replace("&amp;", "&"))
        assert jobs.status_code == 200
        return re.findall(r'class="status (\w+)"', jobs.content.decode())

    assert listed(failed_link[1]) == ["failed"]
    assert sorted(listed(summary_link[1])) == ["failed", "skipped", "succeeded", "succeeded"]  # one job per VM
    everything = listed(failed_link[1].replace("&amp;newest=1", ""))
    assert everything == ["failed", "failed"]
    # Newest per kind: db01's verify after its failed backup does not hide the failure.
    Job.objects.create(kind="verify", vm=VM.objects.get(name="db01"), name="db01", status=Job.Status.SUCCEEDED)
    newest_failures = client.get("/jobs/?newest=1&status=failed&since=24h").content.decode()
    assert f'id="job-{sample["failed"].pk}"' in newest_failures
    assert client.get("/jobs/?newest=yes").status_code == 400


def test_it_asks_as_many_queries_for_1000_vms_as_for_10(client, users, tmp_path):
    """The estate's jobs are made as a policy's, so that every answer has rows to read."""
    from django.contrib.contenttypes.models import ContentType

    client.force_login(users[roles.VIEWER])
    policy_type = ContentType.objects.get_for_model(Policy)

    def queries() -> int:
        first = Policy.objects.order_by("pk").first()
        Job.objects.filter(started_by_type=None).update(started_by_type=policy_type, started_by_id=first.pk)
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/").status_code == 200
        return len(ctx)

    manager = build_estate(10, destination_path=str(tmp_path))
    Job.objects.filter(vm__name="vm00003").update(status=Job.Status.FAILED, error="boom")
    queries()  # what a first visit makes once
    small = queries()
    build_estate(990, destination_path=str(tmp_path), start=10, manager=manager)
    assert queries() == small
