"""A scheduler tick's queries do not grow with the VMs its policies cover (issue 22)."""

import datetime

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from jobs.models import Job
from policies.models import Policy
from policies.schedule import tick
from tests.estate import build_estate


def _tick_at(day: datetime.date):
    at = timezone.make_aware(datetime.datetime.combine(day, datetime.time(1)))
    with CaptureQueriesContext(connection) as ctx:
        report = tick(now=at)
    sql = [q["sql"] for q in ctx.captured_queries]
    # An executemany is one entry, "N times: INSERT ...".
    job_inserts = [s for s in sql if "INSERT" in s[:30] and 'INTO "jobs_job"' in s]
    return report, len(sql) - len(job_inserts), len(job_inserts)


def test_it_ticks_with_as_many_queries_for_1000_vms_as_for_10(db, tmp_path):
    manager = build_estate(10, destination_path=str(tmp_path))
    Policy.objects.update(created=timezone.now() - datetime.timedelta(days=1))
    day = timezone.localdate() + datetime.timedelta(days=1)
    figures = []
    for moment in ("first", "small", "large"):
        # The first tick starts the policies' first runs; the next two are alike: the last run's
        # backups done (the tick closes it), each policy due.
        Job.objects.update(status=Job.Status.SUCCEEDED)
        figures.append(_tick_at(day))
        day += datetime.timedelta(days=1)
        if moment == "small":
            build_estate(990, destination_path=str(tmp_path), start=10, manager=manager)
    _, (small, small_queries, small_inserts), (large, large_queries, large_inserts) = figures
    # Five policies, each covering a tag of twenty: 50 backups each at 1,000 VMs.
    assert [r.jobs.count() for r in small.runs] == [1] * 5
    assert [r.jobs.count() for r in large.runs] == [50] * 5
    assert large_queries == small_queries, (small_queries, large_queries)
    # One INSERT of the jobs per run, whatever their number (executemany: psycopg pipelines the rows).
    assert small_inserts == large_inserts == 5
