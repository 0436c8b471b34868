"""A schedule and a backup window that never meet: the scheduler starts no run due outside the
window, so such a policy would never back up by itself. The model, its form and the API refuse it,
saying when the schedule runs; the form's preview marks the runs the window would not start."""

import datetime
import re

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from core import roles
from policies.models import Policy
from policies.validators import schedule_window_problems, times_outside_window

T = datetime.time
NEVER = (
    "The schedule runs at 01:00, outside the backup window (02:00 to 03:00): no scheduled backup would ever start. "
    "Move the window or the schedule."
)


@pytest.fixture
def nightly(destination):
    """nightly-prod, at 01:00, no window (the tester's policy 1)."""
    return Policy.objects.create(name="nightly-prod", destination=destination, schedule="0 1 * * *")


def form_of(policy: Policy, **changes) -> dict:
    """The policy form's fields as the page posts them, with `changes`."""
    form = {"name": policy.name, "destination": policy.destination_id, "schedule": policy.schedule}
    form |= {"strategy": policy.strategy, "priority": policy.priority, "full_every_days": 7, "max_chain_length": 14}
    form |= {"guest_ssh_user": "root", "guest_ssh_port": 22, "guest_command_timeout": 300, "parallel_vms": 2}
    form |= {"full_every_runs": 0, "keep_last": 7, "keep_days": 0, "keep_daily": 0, "keep_weekly": 0}
    form |= {"keep_monthly": 0, "proof_schedule": "0 6 * * *", "window_start": "", "window_end": ""}
    return form | changes


def test_it_refuses_a_window_the_schedule_never_runs_in_on_the_model(nightly):
    nightly.window_start, nightly.window_end = T(2), T(3)
    with pytest.raises(ValidationError) as refused:
        nightly.full_clean()
    assert refused.value.message_dict == {"window_start": [NEVER]}


def test_it_refuses_it_on_the_policy_form_in_the_window_fields_and_keeps_the_policy(client, users, nightly):
    client.force_login(users[roles.OPERATOR])
    url = reverse("policy-edit", args=[nightly.pk])
    response = client.post(url, form_of(nightly, window_start="02:00", window_end="03:00"))
    assert response.status_code == 200  # not "Policy nightly-prod saved."
    page = response.content.decode().replace("&#x27;", "'")
    assert 'data-field="window_start"' in page and NEVER in page
    nightly.refresh_from_db()
    assert (nightly.window_start, nightly.window_end) == (None, None)


def test_it_judges_the_window_against_the_schedule_typed_beside_it(client, users, nightly):
    client.force_login(users[roles.OPERATOR])
    url = reverse("policy-edit", args=[nightly.pk])
    # Both changed at once: the new schedule's 02:30 is inside the new window.
    moved = form_of(nightly, schedule="30 2 * * *", window_start="02:00", window_end="03:00")
    assert client.post(url, moved).status_code == 302
    nightly.refresh_from_db()
    assert (nightly.schedule, nightly.window_start) == ("30 2 * * *", T(2))
    # A schedule refused is not judged against the window: neither one typed wrong (the model's
    # validator refuses it) nor none at all (the form's field does, and the saved one would be judged).
    for schedule in ("0 25 * * *", ""):
        refused = client.post(url, moved | {"schedule": schedule, "window_start": "04:00", "window_end": "05:00"})
        assert list(refused.context["form"].errors) == ["schedule"], schedule


def test_it_refuses_it_on_the_api_with_a_400(api_as, nightly, destination):
    api = api_as(roles.OPERATOR)
    changed = api.patch(
        reverse("api:policy-detail", args=[nightly.pk]), {"window_start": "02:00", "window_end": "03:00"}, format="json"
    )
    assert changed.status_code == 400
    assert changed.json()["error"]["fields"] == {"window_start": [NEVER]}
    # A new policy with the default schedule (01:00 every day), and a change of the schedule alone.
    body = {"name": "p", "destination": destination.pk, "window_start": "02:00", "window_end": "03:00"}
    created = api.post(reverse("api:policy-list"), body, format="json")
    assert created.status_code == 400 and created.json()["error"]["fields"]["window_start"] == [NEVER]
    nightly.window_start, nightly.window_end = T(0, 30), T(1, 30)
    nightly.save()
    moved = api.patch(reverse("api:policy-detail", args=[nightly.pk]), {"schedule": "0 4 * * *"}, format="json")
    assert moved.status_code == 400
    assert moved.json()["error"]["fields"]["window_start"][0].startswith(
        "The schedule runs at 04:00, outside the backup window (00:30 to 01:30)"
    )
    nightly.refresh_from_db()
    assert nightly.schedule == "0 1 * * *" and Policy.objects.count() == 1


@pytest.mark.parametrize(
    "schedule, start, end",
    [
        ("0 23 * * *", T(22), T(4)),  # the window wraps midnight, around the schedule
        ("30 3 * * *", T(22), T(4)),  # after midnight, in the same window
        ("0 * * * *", T(2), T(3)),  # one of its times (02:00) is inside
        ("0 1,2 * * 1-5", T(2), T(3)),  # 02:00 is, on the days it runs
        ("59 23 * * *", T(23), T(0)),  # the window ends at midnight
    ],
)
def test_it_accepts_a_schedule_with_a_time_inside_the_window(api_as, destination, schedule, start, end):
    policy = Policy(name="p", destination=destination, schedule=schedule, window_start=start, window_end=end)
    policy.full_clean()
    body = {"name": "p", "destination": destination.pk, "schedule": schedule}
    body |= {"window_start": f"{start:%H:%M}", "window_end": f"{end:%H:%M}"}
    created = api_as(roles.OPERATOR).post(reverse("api:policy-list"), body, format="json")
    assert created.status_code == 201, created.json()


@pytest.mark.parametrize(
    "schedule, start, end, said",
    [
        ("0 1,4 * * *", T(2), T(3), "runs at 01:00 and 04:00, both outside the backup window (02:00 to 03:00)"),
        ("0 3 * * *", T(2), T(3), "runs at 03:00, outside"),  # the end is not inside, as the scheduler reads it
        ("30 */6 * * *", T(1), T(6), "runs at 00:30, 06:30, 12:30 and 18:30, all outside"),
        ("*/5 0-1 * * *", T(2), T(3), "runs at 00:00, 00:05, 00:10, 00:15 and 20 more times of day, all outside"),
        ("0 12 * * *", T(22), T(6), "runs at 12:00, outside the backup window (22:00 to 06:00)"),
    ],
)
def test_it_says_which_times_the_schedule_runs_at(schedule, start, end, said):
    (message,) = schedule_window_problems(schedule, start, end).values()
    assert said in message


def test_it_agrees_with_the_scheduler_on_each_run(destination):
    """The refusal and the scheduler's own test of a due run (Policy.window_end_after) say the same."""
    after = timezone.now()
    for schedule, start, end in [
        ("0 1 * * *", T(2), T(3)),
        ("0 * * * *", T(2), T(3)),
        ("0 23 * * *", T(22), T(4)),
        ("15 4 * * *", T(22), T(4)),
        ("*/20 4-5 * * *", T(5, 30), T(6)),
    ]:
        policy = Policy(destination=destination, schedule=schedule, window_start=start, window_end=end)
        runs, moment = [], after
        for _ in range(60):
            moment = policy.next_run(after=moment)
            runs.append(moment)
        started = any(policy.window_end_after(run) is not None for run in runs)
        assert started == (schedule_window_problems(schedule, start, end) == {}), schedule


def test_it_reads_both_in_the_sites_time_zone_across_a_change_of_the_clocks(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    timezone.activate("Europe/Berlin")
    try:
        # On the spring change day 02:00-03:00 does not exist: the 02:30 run and the window's ends
        # all fall on the jump, an empty window. Every other day the run is inside.
        spring = datetime.date(2026, 3, 29)
        assert times_outside_window("30 2 * * *", T(2, 15), T(2, 45), today=spring) == []
        assert times_outside_window("30 2 * * *", T(2, 15), T(2, 45), today=spring - datetime.timedelta(days=1)) == []
        assert times_outside_window("30 1 * * *", T(2, 15), T(2, 45), today=spring) == [T(1, 30)]
    finally:
        timezone.deactivate()


def test_it_marks_the_runs_outside_the_window_in_the_preview(client, users, nightly):
    client.force_login(users[roles.VIEWER])
    url = reverse("policy-schedule-preview")
    never = client.get(url, {"schedule": "0 1 * * *", "window_start": "02:00", "window_end": "03:00"})
    html = never.content.decode().replace("&#x27;", "'")
    assert html.count("outside the backup window: not started") == 5
    assert 'class="error window-error"' in html and NEVER in html
    # Hourly in a window of one hour: the run at 02:00 is started, the others are marked.
    hourly = client.get(url, {"schedule": "0 * * * *", "window_start": "02:00", "window_end": "03:00"})
    rows = re.findall(r"<li>(.*?)</li>", hourly.content.decode())
    for row in rows:
        inside = re.search(r'<time datetime="[^"]+T02:00:00', row) is not None
        assert ("outside the backup window" not in row) == inside, row
    assert "window-error" not in hourly.content.decode()
    # Without a window (or half of one, or one not a time) nothing is marked.
    for window in ({}, {"window_start": "02:00"}, {"window_start": "2 am", "window_end": "03:00"}):
        assert "outside the backup window" not in client.get(url, {"schedule": "0 1 * * *"} | window).content.decode()
    # The form asks with the window's ends, and asks again when they change.
    client.force_login(users[roles.OPERATOR])
    form = client.get(reverse("policy-edit", args=[nightly.pk])).content.decode()
    schedule_input = re.search(r'<input[^>]*name="schedule"[^>]*>', form).group(0)
    assert 'hx-include="#id_window_start, #id_window_end"' in schedule_input
    assert 'hx-params="schedule,window_start,window_end"' in schedule_input
    for name in ("window_start", "window_end"):
        tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', form).group(0)
        assert 'hx-get="/policies/schedule-preview/"' in tag and 'hx-target="#schedule-preview"' in tag
    # A refused post shows the marks under the schedule, beside the refusal.
    refused = client.post(
        reverse("policy-edit", args=[nightly.pk]), form_of(nightly, window_start="02:00", window_end="03:00")
    )
    assert refused.content.decode().count("outside the backup window: not started") == 5
