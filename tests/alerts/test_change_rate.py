"""The change-rate alert on generated histories: 30 days of incrementals every 6 h around a usual
rate, then a spike (flagged, alerted with its figures, on the dashboard's partial), a steady VM, a
VM with too little history, a tiny VM under the floor, and the policy's threshold."""

from decimal import Decimal

import pytest

from alerts.change_rate import flagged_vms, judge_point
from alerts.models import AlertEvent, AlertRule
from policies.models import Policy
from repository.models import BackupDestination
from tests.alerts.history import GiB, MiB, finish_backup, make_history, make_vm


@pytest.fixture
def policy(db, destination_dir):
    destination = BackupDestination.objects.create(name="local", path=str(destination_dir))
    return Policy.objects.create(name="nightly", destination=destination)


@pytest.fixture
def sync_tasks(settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}


def test_it_alerts_on_a_spike_far_above_the_vms_usual_with_the_figures(
    policy, smtp_sink, sync_tasks, django_capture_on_commit_callbacks
):
    assert policy.change_rate_factor == Decimal(5)  # the default
    AlertRule.objects.create(policy=policy, emails="ops@example.com")
    app01 = make_vm("app01")
    history = make_history(app01, policy=policy, usual=5 * GiB)
    assert len(history) > 100
    with django_capture_on_commit_callbacks(execute=True):
        spike = finish_backup(history[-1], bytes_per_hour=48.2 * GiB)
    sentence = (
        f"app01 wrote 48.2 GiB/h in the 6 h before backup {spike.pk}, 9.6x its usual 5.0 GiB/h (median of the last 10)"
    )
    event = AlertEvent.objects.get()
    assert (event.kind, event.vm, event.point, event.job) == ("change_rate", app01, spike, spike.job)
    assert event.subject == f"Unusual change rate: {sentence}"
    assert event.details["times_usual"] == 9.6 and event.details["usual_bytes_per_hour"] == 5 * GiB
    assert event.details["bytes_changed"] == round(48.2 * GiB * 6) and event.details["samples"] == 10
    (message,) = smtp_sink.messages
    unfolded = message["subject"].replace("\r\n", "").replace("\n", "")  # a long header is folded
    assert unfolded == f"[oVirt Backup] Unusual change rate: {sentence}"
    assert "threshold_factor: 5.0" in message["body"]
    (flagged,) = flagged_vms()
    assert (flagged.vm_name, flagged.point_id, flagged.sentence) == ("app01", spike.pk, sentence)


def test_it_flags_neither_a_steady_vm_nor_one_with_too_little_history(policy, sync_tasks):
    AlertRule.objects.create(policy=policy, emails="ops@example.com")
    steady = make_history(make_vm("steady"), policy=policy, usual=5 * GiB)
    finish_backup(steady[-1], bytes_per_hour=6 * GiB)  # the top of its noise and a bit: still usual
    # A full and four incrementals: not enough to know its usual, whatever comes next.
    young = make_history(make_vm("young"), policy=policy, usual=1 * GiB, days=1)
    assert len(young) == 4
    young_spike = finish_backup(young[-1], bytes_per_hour=100 * GiB)
    assert judge_point(young_spike) is None
    assert AlertEvent.objects.count() == 0 and flagged_vms() == []


def test_it_ignores_a_tiny_vm_under_the_floor_however_many_times_its_usual(policy, settings):
    tiny = make_history(make_vm("tiny"), policy=policy, usual=1 * MiB)
    spike = finish_backup(tiny[-1], bytes_per_hour=10 * MiB)
    assert judge_point(spike) is None and flagged_vms() == []
    settings.ALERT_CHANGE_RATE_FLOOR = 5 * MiB  # an admin who wants to hear of it
    assert judge_point(spike).times_usual == "10.0x"
    assert [f.vm_name for f in flagged_vms()] == ["tiny"]


@pytest.mark.parametrize(
    ("factor", "flagged"), [(Decimal(5), True), (Decimal("9.5"), True), (Decimal(10), False), (None, False)]
)
def test_it_uses_the_policys_threshold(policy, factor, flagged):
    """9.6 times the usual trips 5 and 9.5, not 10; an empty setting turns the rule off."""
    Policy.objects.filter(pk=policy.pk).update(change_rate_factor=factor)
    policy.refresh_from_db()
    AlertRule.objects.create(policy=policy, emails="ops@example.com")
    history = make_history(make_vm("app01"), policy=policy, usual=5 * GiB)
    spike = finish_backup(history[-1], bytes_per_hour=48.2 * GiB)
    assert (judge_point(spike) is not None) is flagged
    assert AlertEvent.objects.filter(kind="change_rate").exists() is flagged
    assert bool(flagged_vms()) is flagged


def test_it_judges_the_latest_incremental_only_and_keeps_its_usual_through_one_earlier_spike(policy):
    history = make_history(make_vm("app01"), policy=policy, usual=5 * GiB)
    spike = finish_backup(history[-1], bytes_per_hour=60 * GiB)
    after = finish_backup(spike, bytes_per_hour=5 * GiB)  # back to usual: no longer flagged
    assert flagged_vms() == [] and judge_point(after) is None
    again = finish_backup(after, bytes_per_hour=30 * GiB)  # the median shrugs off the earlier spike
    (flagged,) = flagged_vms()
    assert flagged.point_id == again.pk and flagged.usual_bytes_per_hour == pytest.approx(5 * GiB, rel=0.05)


def test_it_lists_the_flagged_vms_for_the_dashboard_in_two_queries(policy, django_assert_num_queries, admin_client):
    for n in range(3):
        history = make_history(make_vm(f"app{n:02d}"), policy=policy, usual=(n + 1) * GiB)
        finish_backup(history[-1], bytes_per_hour=(n + 1) * 20 * GiB if n else 2 * GiB)
    with django_assert_num_queries(2):  # the histories, then the latest points' VMs and policies
        flagged = flagged_vms()
    assert [f.vm_name for f in flagged] == ["app01", "app02"]
    html = admin_client.get("/").content.decode().replace("\xa0", " ")  # the dashboard
    assert "app01</a> wrote <b>40.0 GiB/h</b> in the 6 h before backup" in html
    assert "<b>20.0x</b> its usual 2.0 GiB/h (median of the last 10; the policy alerts above 5x)" in html
    assert "app00" not in html and 'href="/alerts/?kind=change_rate"' in html


def test_it_says_so_on_the_dashboard_when_no_vm_is_flagged(admin_client):
    html = admin_client.get("/").content.decode()
    assert "No VM writes far above its usual rate." in html
