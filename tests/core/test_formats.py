from datetime import UTC, datetime, timedelta

from django.template import Context, Template
from django.test import override_settings

from core import formats


def test_it_says_sizes_in_iec_units():
    assert formats.iec(None) == ""
    assert formats.iec(1) == "1 byte"
    assert formats.iec(512) == "512 bytes"
    assert formats.iec(1536) == "1.5 KiB"
    assert formats.iec(10 * 2**30) == "10.0 GiB"


def test_it_says_durations_as_people_do():
    assert formats.duration(None) == ""
    assert formats.duration(timedelta(microseconds=594566)) == "0.6 s"
    assert formats.duration(4.6) == "4.6 s"
    assert formats.duration(59.4) == "59 s"
    assert formats.duration(130) == "2 min 10 s"
    assert formats.duration(120) == "2 min"
    assert formats.duration(timedelta(hours=3, minutes=5, seconds=9)) == "3 h 5 min"
    assert formats.duration(timedelta(days=2, hours=4)) == "2 d 4 h"


@override_settings(TIME_ZONE="Europe/Prague")
def test_it_writes_one_date_format_in_the_sites_time_zone():
    moment = datetime(2026, 12, 7, 1, 30, 15, tzinfo=UTC)
    assert formats.when(moment) == "2026-12-07 02:30"
    assert formats.when(moment, seconds=True) == "2026-12-07 02:30:15"
    assert formats.ago(moment - timedelta(minutes=3), now=moment) == "3 min ago"
    assert formats.ago(moment + timedelta(seconds=90), now=moment) == "in 1 min 30 s"


def test_it_counts_with_plurals():
    assert formats.plural(1, "VM") == "1 VM"
    assert formats.plural(3, "VM") == "3 VMs"
    assert formats.plural(0, "policy", "policies") == "0 policies"


def test_it_labels_keys():
    assert formats.label("image_transfer", "strategy") == "Disk image transfer"  # registered by strategies
    assert formats.label("policy_changed", "audit") == "Policy changed"
    assert formats.label(None) == ""


def test_it_says_audit_details_in_words():
    assert formats.detail(["bigdata01", "web01"], "vms_added") == "bigdata01, web01"
    assert formats.detail([], "vms_added") == "none"
    assert formats.detail("email", "channel") == "E-mail" and formats.detail("full", "type") == "Full"
    assert formats.detail("web_01", "name") == "web_01"  # a name is shown as it is
    assert formats.detail(True) == "yes" and formats.detail(None) == "—"
    assert formats.detail({"keep_last": 7, "channel": "webhook"}) == "Keep last: 7; Channel: Webhook"


def test_it_offers_the_same_as_builtin_template_filters():
    moment = datetime(2026, 12, 7, 1, 30, tzinfo=UTC)
    text = Template(
        '{{ n|iec }}|{{ d|duration }}|{{ t|when }}|{{ c|plural:"policy,policies" }}|{{ k|label:"strategy" }}'
    ).render(Context({"n": 2**20, "d": timedelta(seconds=130), "t": moment, "c": 2, "k": "ssh_transfer"}))
    assert text == "1.0\xa0MiB|2\xa0min\xa010\xa0s|2026-12-07 01:30|2 policies|SSH transfer"
