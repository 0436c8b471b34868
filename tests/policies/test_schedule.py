"""Policies that run by themselves: the ticker (time injected, never slept on), the backup window,
the full/incremental rhythm, run now, and where each job came from."""

import datetime
import io

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from core import roles
from inventory.models import VM
from jobs.models import Job
from jobs.runner import run_job
from policies.models import Policy, PolicyRun
from policies.schedule import scheduled_tick, tick
from repository.models import BackupPoint


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime.datetime:
    """A moment of January 2026 in the site's time zone."""
    return timezone.make_aware(datetime.datetime(2026, 1, day, hour, minute, second))


@pytest.fixture
def nightly(manager, destination):
    """Production-tagged VMs (web01, db01), at 01:00, created the evening before."""
    return Policy.objects.create(
        name="nightly", priority=20, destination=destination, schedule="0 1 * * *", match_tag="production",
        created=at(1, 18),
    )  # fmt: skip


def backups_of(run: PolicyRun) -> list[tuple[str, str, str]]:
    return [(j.name, j.status, j.origin) for j in run.jobs.order_by("created", "pk")]


def test_it_runs_a_policy_at_its_cron_time_once(nightly, destination):
    legacy = Policy.objects.create(
        name="first", priority=5, destination=destination, schedule="0 1 * * *", created=at(1, 18),
        strategy="ssh_transfer", strategy_options={"netcat": True},
    )  # fmt: skip
    legacy.vms.add(VM.objects.get(name="legacy01"))

    assert tick(now=at(2, 0, 59)).runs == []
    runs = tick(now=at(2, 1)).runs
    assert [(r.policy.name, r.number, r.due, r.origin) for r in runs] == [
        ("first", 1, at(2, 1), "schedule"),
        ("nightly", 1, at(2, 1), "schedule"),
    ]
    assert backups_of(runs[1]) == [("db01", "queued", "schedule"), ("web01", "queued", "schedule")]
    # Highest priority first: the queue order is the order jobs get slots in.
    queued = list(Job.objects.filter(kind="backup").order_by("created", "pk").values_list("name", flat=True))
    assert queued == ["legacy01", "db01", "web01"]
    # Each backup runs with its policy's strategy and that strategy's options.
    assert Job.objects.get(name="legacy01").params["options"] == {"netcat": True}

    assert tick(now=at(2, 1, 0, 30)).runs == []  # the same cron time is not run twice
    assert Job.objects.filter(kind="backup").count() == 3
    from core.models import AuditEvent

    started = AuditEvent.objects.filter(action="policy_run_started").order_by("pk")
    assert [(e.source, e.actor_name, e.target_name, e.details["run"]) for e in started] == [
        ("schedule", "", "first", 1),
        ("schedule", "", "nightly", 1),
    ]

    # The next night, the first run's jobs have not started yet: it is not doubled, and says so.
    (second, _) = tick(now=at(3, 1)).runs[::-1]
    assert second.policy == nightly and second.number == 2 and not second.jobs.exists()
    assert second.note == "Not started: the previous run still has 2 active job(s); a run is not doubled."


def test_it_runs_one_schedule_row_for_every_policy(nightly):
    from importlib import import_module

    from django.apps import apps
    from django_q.models import Schedule

    # The row the migration makes (made again here: a transactional test run earlier in this process
    # empties every table, migrations' rows included); making it twice still makes one.
    import_module("policies.migrations.0004_ticker_schedule").add_schedule(apps, None)
    (row,) = Schedule.objects.filter(func__startswith="policies.")
    assert (row.func, row.schedule_type, row.minutes) == ("policies.schedule.scheduled_tick", "I", 1)
    Policy.objects.update(enabled=False)  # the real clock runs here: no run, whatever the hour
    assert scheduled_tick() == {"runs": 0, "skipped_jobs": 0, "finished_runs": 0, "verify_jobs": [], "proof_jobs": []}


def test_it_records_a_run_found_too_late_as_missed(nightly):
    (run,) = tick(now=at(2, 2, 1)).runs
    assert run.note == (
        "Missed: due at 2026-01-02 01:00, but the scheduler only found it at 2026-01-02 02:01; "
        "a run more than 60 minutes late is not started."
    )
    assert not run.jobs.exists() and tick(now=at(2, 2, 2)).runs == []
    assert len(tick(now=at(3, 1, 59)).runs[0].jobs.all()) == 2  # the next night runs as usual


def test_it_skips_backups_not_started_by_the_end_of_the_window(nightly):
    nightly.schedule, nightly.window_start, nightly.window_end = "0 23 * * *", datetime.time(22), datetime.time(6)
    nightly.save()
    (run,) = tick(now=at(2, 23)).runs
    jobs = list(run.jobs.all())
    assert {j.not_after for j in jobs} == {at(3, 6)}

    assert tick(now=at(3, 5, 59)).skipped_jobs == 0
    report = tick(now=at(3, 6, 1))
    assert report.skipped_jobs == 2 and report.finished_runs == 1
    for job in run.jobs.all():
        assert job.status == "skipped"
        assert job.error == (
            "Not started by the end of policy nightly's backup window (22:00 to 06:00, 2026-01-03 06:00 UTC)."
        )


def test_it_skips_a_late_job_when_a_worker_takes_it(nightly):
    nightly.window_start, nightly.window_end = datetime.time(0, 30), datetime.time(2)
    nightly.save()
    (run,) = tick(now=at(2, 1)).runs
    job = run.jobs.first()
    assert run_job(job.pk) == "skipped"  # it is long after 02:00 on 2026-01-02 now
    job.refresh_from_db()
    assert "backup window (00:30 to 02:00" in job.error and job.started is None


def test_it_does_not_start_a_run_due_outside_its_window(nightly):
    nightly.window_start, nightly.window_end = datetime.time(22), datetime.time(0, 30)
    nightly.save()
    (run,) = tick(now=at(2, 1)).runs
    assert run.note == "Not started: due at 01:00, outside its backup window (22:00 to 00:30)."
    assert not run.jobs.exists()


def test_it_takes_a_full_backup_every_second_run_and_verifies_each_run(manager, destination):
    policy = Policy.objects.create(
        name="rhythm", destination=destination, schedule="0 1 * * *", created=at(1, 18), full_every_runs=2,
        verify_after_backup=True,
    )  # fmt: skip
    policy.vms.add(VM.objects.get(name="web01"))
    types, verified = [], []
    for day in (2, 3, 4):
        (run,) = tick(now=at(day, 1)).runs
        (job,) = run.jobs.all()
        assert run_job(job.pk) == "succeeded", Job.objects.get(pk=job.pk).error
        point = BackupPoint.objects.get(pk=Job.objects.get(pk=job.pk).result["point"])
        types.append((point.type, point.note))
        # The run ends once the retention after its backup has run: its verify never reads a chain
        # that retention is merging.
        (prune,) = run.jobs.filter(kind="retention")
        assert tick(now=at(day, 1, 4)).finished_runs == 0
        assert run_job(prune.pk) == "succeeded", Job.objects.get(pk=prune.pk).error
        report = tick(now=at(day, 1, 5))
        assert report.finished_runs == 1
        (verify,) = report.verify_jobs
        assert verify.origin == "schedule" and verify.params["points"] == [point.pk]
        verified.append(run_job(verify.pk))
    assert types == [
        ("full", "Full backup: policy rhythm takes a full backup every 2 runs (run 1)."),
        ("incremental", ""),
        ("full", "Full backup: policy rhythm takes a full backup every 2 runs (run 3)."),
    ]
    assert verified == ["succeeded"] * 3


def test_it_verifies_a_policys_backups_weekly(nightly):
    nightly.verify_weekly = True
    nightly.save()
    web01 = VM.objects.get(name="web01")
    point = BackupPoint.objects.create(
        vm=web01, destination=nightly.destination, policy=nightly, strategy="image_transfer", status="complete"
    )
    (job,) = tick(now=at(2, 0, 30)).verify_jobs
    assert job.params["points"] == [point.pk] and job.started_by == nightly
    assert tick(now=at(8, 0, 29)).verify_jobs == []
    assert len(tick(now=at(9, 0, 30)).verify_jobs) == 1


def test_it_runs_now_from_the_api_the_page_and_the_cli_for_operators_only(client, users, api_as, nightly):
    url = reverse("api:policy-run", args=[nightly.pk])
    assert api_as(roles.VIEWER).post(url).status_code == 403
    client.force_login(users[roles.VIEWER])
    assert client.post(reverse("policy-run", args=[nightly.pk])).status_code == 403
    assert not PolicyRun.objects.exists()

    response = api_as(roles.OPERATOR).post(url)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["number"] == 1 and body["origin"] == "api" and body["owner"] == "operator-user"
    assert [Job.objects.get(pk=pk).origin for pk in body["jobs"]] == ["api", "api"]

    again = api_as(roles.OPERATOR).post(url)  # its jobs are still queued
    assert again.status_code == 400
    assert "still has 2 active job(s); a run is not doubled" in again.json()["error"]["message"]

    PolicyRun.objects.get(number=1).jobs.update(status="cancelled")
    client.force_login(users[roles.OPERATOR])
    page = client.post(reverse("policy-run", args=[nightly.pk]), follow=True).content.decode()
    assert "Run 2 of policy nightly started: 2 backup job(s)." in page
    assert set(PolicyRun.objects.get(number=2).jobs.values_list("origin", flat=True)) == {"page"}

    PolicyRun.objects.get(number=2).jobs.update(status="cancelled")
    out = io.StringIO()
    call_command("run_policy", "nightly", stdout=out)
    assert out.getvalue().startswith("Run 3 of policy nightly: 2 backup job(s).")
    assert set(PolicyRun.objects.get(number=3).jobs.values_list("origin", flat=True)) == {"cli"}


def test_it_shows_the_next_run_and_the_last_run_per_vm(client, users, nightly, settings):
    settings.TIME_ZONE = "Europe/Paris"
    with timezone.override("Europe/Paris"):
        (run,) = tick(now=at(2, 1)).runs
        assert run.due == at(2, 1) and run.due.astimezone(datetime.UTC).hour == 0  # 01:00 in Paris
    Job.objects.filter(name="web01").update(status="failed", error="Disk web01_os is locked on the engine.")
    client.force_login(users[roles.VIEWER])
    page = client.get(reverse("policy-detail", args=[nightly.pk])).content.decode()
    # Times in the site's one format; the page names the zone they are in once, by the schedule.
    assert "At 01:00 every day" in page and "time zone Europe/Paris" in page
    assert "Disk web01_os is locked on the engine." in page and "Run 1, due 2026-01-02" in page
    assert "Run now" not in page  # a viewer does not get the button


def test_it_records_where_each_backup_came_from(client, users, api_as, nightly, settings):
    web01 = VM.objects.get(name="web01")
    response = api_as(roles.OPERATOR).post(reverse("api:vm-backup", args=[web01.pk]), {}, format="json")
    assert Job.objects.get(pk=response.json()["job"]).origin == "api"
    Job.objects.update(status="cancelled")

    client.force_login(users[roles.OPERATOR])
    response = client.post(reverse("vm-backup", args=[web01.pk]), {"type": "auto", "strategy": "", "destination": ""})
    assert response.status_code == 302, response.content.decode()[-2000:]
    page_job = Job.objects.filter(status="queued").get()
    assert page_job.origin == "page"
    Job.objects.update(status="cancelled")

    call_command("backup", "web01", stdout=io.StringIO())
    cli_job = Job.objects.filter(status="queued").get()
    assert cli_job.origin == "cli"
    page = client.get(reverse("job-detail", args=[cli_job.pk])).content.decode()
    assert "Requested from Command line" in page
    # The policy covering web01 is what its backups run under, on the page and in the API.
    assert f'started by policy <a href="{reverse("policy-detail", args=[nightly.pk])}">nightly</a>' in page
    body = api_as(roles.VIEWER).get(reverse("api:job-detail", args=[cli_job.pk])).json()
    assert body["origin"] == "cli"
    assert body["started_by"] == {"type": "policies.policy", "id": nightly.pk, "name": "nightly"}
    listed = api_as(roles.VIEWER).get(
        reverse("api:job-list"), {"started_by_type": "policies.policy", "started_by_id": nightly.pk}
    )
    assert {job["id"] for job in listed.json()["results"]} == set(Job.objects.values_list("pk", flat=True))
    refused = api_as(roles.VIEWER).get(reverse("api:job-list"), {"started_by_type": "policy"})
    assert refused.status_code == 400
    assert "use app.model, e.g. policies.policy" in refused.json()["error"]["message"]
    assert api_as(roles.VIEWER).get(reverse("api:job-list"), {"kind": "bakup"}).status_code == 400


@pytest.mark.parametrize(
    "window, field, message",
    [
        ({"window_start": "22:00"}, "window_end", "Give both ends of the backup window, or neither."),
        ({"window_end": "06:00"}, "window_start", "Give both ends of the backup window, or neither."),
        ({"window_start": "22:00", "window_end": "22:00"}, "window_end", "The backup window ends when it starts"),
    ],
)
def test_it_refuses_a_window_without_two_different_ends(api_as, client, users, destination, window, field, message):
    body = {"name": "p", "destination": destination.pk, **window}
    response = api_as(roles.OPERATOR).post(reverse("api:policy-list"), body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"][field][0].startswith(message)
    client.force_login(users[roles.OPERATOR])
    page = client.post(reverse("policy-new"), body | {"schedule": "0 1 * * *"}).content.decode()
    assert f'data-field="{field}"' in page and message in page
    assert not Policy.objects.exists()


def test_it_refuses_an_exclusion_regex_that_does_not_compile(api_as, destination):
    body = {"name": "p", "destination": destination.pk, "exclude_name_regex": "web("}
    response = api_as(roles.OPERATOR).post(reverse("api:policy-list"), body, format="json")
    assert "regular expression" in response.json()["error"]["fields"]["exclude_name_regex"][0]


def test_it_takes_a_full_backup_when_the_last_full_is_old_or_the_chain_is_long(nightly):
    nightly.full_every_days, nightly.max_chain_length = 3, 2
    nightly.save()
    web01, db01 = VM.objects.get(name="web01"), VM.objects.get(name="db01")

    def point(vm, type, started, parent=None):
        return BackupPoint.objects.create(
            vm=vm, destination=nightly.destination, strategy="image_transfer", status="complete", type=type,
            started=started, parent=parent,
        )  # fmt: skip

    point(web01, "full", at(1, 0, 30))  # more than 3 days before the run of the 5th at 01:00
    full = point(db01, "full", at(3, 1))
    incremental = point(db01, "incremental", at(3, 13), parent=full)
    point(db01, "incremental", at(4, 1), parent=incremental)
    (run,) = tick(now=at(5, 1)).runs
    asked = {j.name: (j.params["type"], j.params.get("full_reason")) for j in run.jobs.all()}
    assert asked == {
        "web01": ("full", "Full backup: the last full backup is 4 days old; policy nightly takes one every 3 days."),
        "db01": (
            "full",
            "Full backup: the chain has 2 incremental backups, the most policy nightly allows (max chain length 2).",
        ),
    }
    Job.objects.update(status="cancelled")
    point(web01, "full", at(5, 1))
    (run,) = tick(now=at(6, 1)).runs
    assert run.jobs.get(name="web01").params == {
        "strategy": "image_transfer", "type": "auto", "destination": nightly.destination_id, "exclude": []
    }  # fmt: skip


def test_it_counts_the_age_of_the_last_full_in_calendar_days(nightly):
    """The last full started seconds after its run was due: a policy taking one every 3 days takes
    the next on the third day, not on the fourth."""
    nightly.full_every_days = 3
    nightly.save()
    for name, day in (("web01", 2), ("db01", 3)):
        BackupPoint.objects.create(
            vm=VM.objects.get(name=name), destination=nightly.destination, strategy="image_transfer",
            status="complete", type="full", started=at(day, 1, 0, 7),
        )  # fmt: skip
    (run,) = tick(now=at(5, 1)).runs
    assert run.jobs.get(name="web01").params["full_reason"] == (
        "Full backup: the last full backup is 3 days old; policy nightly takes one every 3 days."
    )
    assert "full_reason" not in run.jobs.get(name="db01").params


def ticks_through(start: datetime.datetime, hours: int) -> dict[str, list[str]]:
    """The ticker run for `hours` from `start`, on policies made just before; by policy, each
    scheduled run's due time on the site's clock, and how late it started if it did. It ticks every
    5 minutes, not every minute as the django-q2 schedule does: the schedules here all fall on
    such a minute, and a day of ticks stays quick."""
    Policy.objects.update(created=start - datetime.timedelta(minutes=1))
    for minute in range(0, hours * 60, 5):
        tick(now=start + datetime.timedelta(minutes=minute))
    fired: dict[str, list[str]] = {}
    for run in PolicyRun.objects.filter(origin="schedule").select_related("policy").order_by("due"):
        late = "" if run.started == run.due else f" (started {timezone.localtime(run.started):%H:%M %Z})"
        missed = " (missed)" if run.note.startswith("Missed") else ""
        fired.setdefault(run.policy.name, []).append(f"{timezone.localtime(run.due):%H:%M %Z}{late}{missed}")
    return fired


@pytest.fixture
def around_the_clock(destination):
    """A daily time, an hourly schedule and every 20 minutes in the 2 o'clock hour, on no VM (a
    run that covers none is still recorded, with its due time)."""
    for name, schedule in (("daily", "30 2 * * *"), ("hourly", "0 * * * *"), ("two-ish", "*/20 2 * * *")):
        Policy.objects.create(name=name, destination=destination, schedule=schedule)


def test_it_runs_a_daily_time_once_and_hourly_every_real_hour_when_the_clocks_go_back(around_the_clock, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    # Sunday 2026-10-25 in Berlin: 25 hours, 00:00 CEST (22:00 UTC the day before) to 00:00 CET.
    fired = ticks_through(datetime.datetime(2026, 10, 24, 22, tzinfo=datetime.UTC), hours=25)
    assert fired["daily"] == ["02:30 CEST"]  # not again at the repeated 02:30
    hours = [f"{h:02d}:00 CEST" for h in range(3)] + [f"{h:02d}:00 CET" for h in range(2, 24)]
    assert fired["hourly"] == hours  # 25 runs: both 02:00, no hour skipped
    assert fired["two-ish"] == ["02:00 CEST", "02:20 CEST", "02:40 CEST", "02:00 CET", "02:20 CET", "02:40 CET"]


def test_it_runs_a_time_the_clocks_skip_once_when_they_jump(around_the_clock, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    Policy.objects.filter(name="daily").update(window_start=datetime.time(2, 15), window_end=datetime.time(4))
    # Sunday 2026-03-29 in Berlin: 23 hours, 00:00 CET (23:00 UTC the day before) to 00:00 CEST.
    fired = ticks_through(datetime.datetime(2026, 3, 28, 23, tzinfo=datetime.UTC), hours=23)
    # 02:30 does not exist: run as the clocks jump, neither missed nor outside its window (from 02:15)
    assert fired["daily"] == ["03:00 CEST"]
    assert PolicyRun.objects.get(policy__name="daily").note == "The policy covers no VM now."
    assert fired["hourly"] == ["00:00 CET", "01:00 CET"] + [f"{h:02d}:00 CEST" for h in range(3, 24)]
    assert "two-ish" not in fired  # every 20 minutes of an hour that does not exist: none, as in cron


def test_it_reads_cron_times_on_the_sites_clock(around_the_clock, settings):
    # The same day with the site on UTC: no change of the clocks, 24 hours.
    fired = ticks_through(datetime.datetime(2026, 10, 25, 0, tzinfo=datetime.UTC), hours=24)
    assert fired["daily"] == ["02:30 UTC"]
    assert fired["hourly"] == [f"{h:02d}:00 UTC" for h in range(24)]
    assert PolicyRun.objects.get(policy__name="daily").due == datetime.datetime(
        2026, 10, 25, 2, 30, tzinfo=datetime.UTC
    )


def test_it_shows_the_next_runs_across_a_change_of_the_clocks(around_the_clock, settings):
    settings.TIME_ZONE = "Europe/Berlin"

    def upcoming(name: str, after: datetime.datetime, count: int) -> list[str]:
        policy, times = Policy.objects.get(name=name), []
        for _ in range(count):
            after = policy.next_run(after)
            times.append(f"{timezone.localtime(after):%m-%d %H:%M %Z}")
        return times

    autumn = datetime.datetime(2026, 10, 24, 23, 45, tzinfo=datetime.UTC)  # 01:45 CEST
    assert upcoming("daily", autumn, 2) == ["10-25 02:30 CEST", "10-26 02:30 CET"]
    assert upcoming("hourly", autumn, 4) == [
        "10-25 02:00 CEST",
        "10-25 02:00 CET",
        "10-25 03:00 CET",
        "10-25 04:00 CET",
    ]
    spring = datetime.datetime(2026, 3, 28, 23, 45, tzinfo=datetime.UTC)  # 00:45 CET
    assert upcoming("daily", spring, 2) == ["03-29 03:00 CEST", "03-30 02:30 CEST"]
    assert upcoming("hourly", spring, 3) == ["03-29 01:00 CET", "03-29 03:00 CEST", "03-29 04:00 CEST"]


def test_it_reads_a_window_end_in_the_repeated_hour_as_its_first_occurrence(destination, settings):
    settings.TIME_ZONE = "Europe/Berlin"
    Policy.objects.create(
        name="hourly", destination=destination, schedule="0 * * * *",
        window_start=datetime.time(22), window_end=datetime.time(2, 30),
    )  # fmt: skip
    ticks_through(datetime.datetime(2026, 10, 24, 23, tzinfo=datetime.UTC), hours=3)  # 01:00 CEST to 03:00 CET
    notes = [(f"{timezone.localtime(r.due):%H:%M %Z}", r.note) for r in PolicyRun.objects.order_by("due")]
    # The window ended at 02:30 summer time: the second 02:00 is after it, not inside with a past end.
    assert notes == [
        ("01:00 CEST", "The policy covers no VM now."),
        ("02:00 CEST", "The policy covers no VM now."),
        ("02:00 CET", "Not started: due at 02:00, outside its backup window (22:00 to 02:30)."),
    ]
