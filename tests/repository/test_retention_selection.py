"""Which points retention keeps, deletes or merges, and why: the selection alone, no files."""

from datetime import UTC, datetime, timedelta

import pytest

from repository.retention import DELETE, KEEP, MERGE, PointInfo, select_expired

NOW = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)


def daily_chains(days: int, *, chain: int = 7, damaged: frozenset = frozenset()) -> list[PointInfo]:
    """One point a day at 22:00, oldest first, a full every `chain` days and incrementals between."""
    points, parent = [], None
    for i in range(days):
        pk = i + 1
        full = i % chain == 0
        points.append(
            PointInfo(
                pk,
                NOW - timedelta(days=days - 1 - i, hours=1),
                None if full else parent,
                "damaged" if pk in damaged else "complete",
                "full" if full else "incremental",
            )
        )
        parent = pk
    return points


def actions(plan) -> dict[int, tuple[str, str]]:
    return {d.point.pk: (d.action, d.reason) for d in plan.decisions}


def test_it_keeps_the_last_n_and_deletes_whole_chains_before_them():
    plan = select_expired(daily_chains(21), keep_last=3, now=NOW)
    decided = actions(plan)
    assert decided[21] == (KEEP, "kept: one of the last 3")
    assert decided[19] == (KEEP, "kept: one of the last 3; becomes a full (what it builds on is merged into it)")
    # 19..21 are the incrementals 5..7 of the chain starting at 15: 15..18 are what they read through.
    assert decided[18] == (MERGE, "merged into #19: a kept incremental depends on it")
    assert decided[15][0] == MERGE and plan.merge_targets == [19]
    assert {pk for pk, (a, _) in decided.items() if a == DELETE} == set(range(1, 15))
    assert decided[1] == (DELETE, "deleted: not one of the last 3")


def test_it_keeps_an_expired_point_between_two_kept_ones():
    day = timedelta(days=1)
    start = datetime(2026, 10, 30, 22, tzinfo=UTC)
    points = [
        PointInfo(1, start, None, "complete", "full"),
        PointInfo(2, start + day, 1, "complete", "incremental"),
        PointInfo(3, start + 2 * day, 2, "complete", "incremental"),
        PointInfo(4, start + 3 * day, 3, "complete", "incremental"),
    ]
    decided = actions(select_expired(points, keep_last=1, monthly=2, now=NOW))
    assert decided == {
        4: (KEEP, "kept: one of the last 1, monthly 2026-11"),
        3: (KEEP, "kept: backup #4 depends on it"),
        2: (KEEP, "kept: monthly 2026-10; becomes a full (what it builds on is merged into it)"),
        1: (MERGE, "merged into #2: a kept incremental depends on it"),
    }


def test_it_keeps_gfs_points_per_day_week_and_month():
    points = daily_chains(120, chain=7)
    plan = select_expired(points, keep_last=2, daily=7, weekly=4, monthly=3, now=NOW)
    kept = {
        d.point.pk: d.reason.removesuffix("; becomes a full (what it builds on is merged into it)")
        for d in plan.of(KEEP)
    }
    assert kept[120] == "kept: one of the last 2, daily 2026-11-28, weekly 2026-W48, monthly 2026-11"
    assert kept[118] == "kept: daily 2026-11-26"
    assert kept[116] == "kept: daily 2026-11-24"
    assert kept[114] == "kept: daily 2026-11-22, weekly 2026-W47"
    assert [r for r in kept.values() if "daily" not in r] == [
        "kept: weekly 2026-W46",
        "kept: weekly 2026-W45",
        "kept: monthly 2026-10",
        "kept: monthly 2026-09",
    ]
    # No kept point reads through a deleted one.
    deleted = {d.point.pk for d in plan.of(DELETE)}
    by_pk = {p.pk: p for p in points}
    merged = {d.point.pk: d.into for d in plan.of(MERGE)}
    for pk in kept:
        parent = by_pk[pk].parent_id
        while parent and parent not in merged:
            assert parent not in deleted, f"#{pk} reads through deleted #{parent}"
            parent = by_pk[parent].parent_id


def test_it_never_deletes_a_damaged_point_silently():
    points = daily_chains(21, damaged=frozenset({3}))
    decided = actions(select_expired(points, keep_last=1, now=NOW))
    assert decided[3] == (KEEP, "kept: damaged, never deleted silently (delete it by hand)")
    assert decided[2] == (KEEP, "kept: backup #3 depends on it")
    assert decided[4][0] == DELETE


def test_it_keeps_points_younger_than_the_keep_days():
    decided = actions(select_expired(daily_chains(30), keep_last=1, keep_days=10, now=NOW))
    assert decided[22] == (KEEP, "kept: younger than 10 days")
    assert decided[21] == (KEEP, "kept: younger than 10 days; becomes a full (what it builds on is merged into it)")
    assert decided[15] == (MERGE, "merged into #21: a kept incremental depends on it")
    assert decided[10] == (DELETE, "deleted: not one of the last 1, older than 10 days")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"keep_last": 0}, "Keep the last: at least 1 backup; a policy that keeps none would delete every one."),
        ({"keep_last": 3, "weekly": -1}, "Keep weekly backups of the last (weeks): zero or more, not -1."),
        ({"keep_last": -2}, "Keep the last: zero or more, not -2."),
    ],
)
def test_it_refuses_keep_values_naming_the_field(values, message):
    with pytest.raises(ValueError) as refused:
        select_expired(daily_chains(3), now=NOW, **values)
    assert str(refused.value) == message


def test_it_keeps_points_of_others_and_what_they_build_on_without_counting_them():
    points = daily_chains(14)
    # 13 and 14 were backed up by hand (or by another policy) on this policy's chain.
    points = [p._replace(governed=p.pk < 13) for p in points]
    decided = actions(select_expired(points, keep_last=1, now=NOW))
    assert decided[14] == (KEEP, "kept: made by hand or by another policy")
    assert decided[13] == (KEEP, "kept: made by hand or by another policy")
    assert decided[12] == (KEEP, "kept: one of the last 1; becomes a full (what it builds on is merged into it)")
    assert decided[8] == (MERGE, "merged into #12: a kept incremental depends on it")
    assert decided[7] == (DELETE, "deleted: not one of the last 1")
