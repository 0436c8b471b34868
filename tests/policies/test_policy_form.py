"""The policy form in sections with help, its VM picker, the schedule in words with its next runs (as
typed, and on the policy page), and what the policy's retention would keep today."""

import re
from datetime import datetime, timedelta
from html.parser import HTMLParser

import pytest
from django.urls import reverse
from django.utils import timezone

from core import roles
from core.formats import when
from inventory.models import VM, Cluster, Manager
from policies.explain import describe, next_runs, preview_schedule, summarize_retention
from policies.forms import SECTIONS, PolicyForm
from policies.models import Policy
from repository.models import BackupPoint


@pytest.fixture
def inventory(db):
    manager = Manager.objects.create(
        name="e", api_url="https://e.example/ovirt-engine/api", username="admin@internal", password="x"
    )
    prod = Cluster.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-0000000000c1", name="Prod")
    vms = {
        name: VM.objects.create(
            manager=manager, engine_id=f"00000000-0000-0000-0000-00000000000{n}", name=name, cluster=prod
        )
        for n, name in enumerate(["web01", "db01", "app01"])
    }
    return {"cluster": prod, "vms": vms}


@pytest.fixture
def nightly(destination, inventory):
    policy = Policy.objects.create(name="nightly", destination=destination, schedule="30 1 * * *", keep_last=3)
    policy.vms.set([inventory["vms"]["db01"]])
    return policy


class Page(HTMLParser):
    """The elements of a page by id, the `for` of its labels, the names of its inputs, its legends."""

    def __init__(self, html: str):
        super().__init__()
        self.ids: dict[str, str] = {}
        self.label_for: list[str] = []
        self.names: list[str] = []
        self.legends: list[str] = []
        self._open: list[tuple[str, str]] = []  # (tag, id) of elements whose text is collected
        self.text: dict[str, str] = {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids[attrs["id"]] = tag
            self._open.append((tag, attrs["id"]))
            self.text[attrs["id"]] = ""
        if tag == "label" and attrs.get("for"):
            self.label_for.append(attrs["for"])
        if tag in ("input", "select", "textarea") and attrs.get("name"):
            self.names.append(attrs["name"])
        if tag == "legend":
            self._open.append(("legend", ""))
            self.legends.append("")

    def handle_endtag(self, tag):
        for i in range(len(self._open) - 1, -1, -1):
            if self._open[i][0] == tag:
                del self._open[i]
                break

    def handle_data(self, data):
        for tag, id_ in self._open:
            if tag == "legend" and not id_:
                self.legends[-1] += data
            elif id_:
                self.text[id_] += data


def test_it_renders_every_field_once_in_its_section_with_a_label_and_an_example(client, users, nightly):
    client.force_login(users[roles.OPERATOR])
    html = client.get(reverse("policy-edit", args=[nightly.pk])).content.decode()
    page = Page(html)
    form = PolicyForm(instance=nightly)
    placed = [field.name for _, fields in form.sections() for field in fields]
    assert sorted(placed) == sorted(form.fields), "every field in exactly one section"
    assert [legend.strip() for legend in page.legends if legend != "VMs chosen by name"] == [
        "What",
        "When",
        "Where",
        "How",
        "Retention",
        "Guest commands",
    ]
    assert [f"section-{s.key}" for s in SECTIONS] == [i for i in page.ids if i.startswith("section-")]
    for name in form.fields:
        bound = form[name]
        if name == "vms":  # a group of checkboxes: named by its legend, each box by its VM's name
            assert "VMs chosen by name" in page.legends
            assert {f"id_vms_{n}" for n in range(3)} <= set(page.label_for)
            assert page.names.count("vms") == 3
        else:
            assert page.label_for.count(bound.id_for_label) == 1, name
            assert page.names.count(name) == 1, name
        help_id = f"id_{name}_helptext"
        assert page.ids.get(help_id) == "small", name
        assert "E.g." in page.text[help_id], (name, page.text[help_id])
    assert "Hold down" not in html and ">cron<" not in html
    # The policy's own VM ticked and listed first; a search box for the others (shown by the page's script).
    assert re.search(rf'name="vms" value="{nightly.vms.get().pk}"[^>]*checked', html)
    assert html.index("db01 (Prod)") < html.index("app01 (Prod)") < html.index("web01 (Prod)")
    assert 'id="vm-search"' in html and page.label_for.count("vm-search") == 1


def test_it_saves_the_vms_picked_and_checks_the_rest_on_the_model(client, users, destination, inventory):
    client.force_login(users[roles.OPERATOR])
    vms = inventory["vms"]
    form = {"name": "picked", "destination": destination.pk, "schedule": "0 2 * * *", "strategy": "image_transfer"}
    form |= {"priority": 100, "full_every_days": 7, "max_chain_length": 14, "guest_ssh_user": "root"}
    form |= {"guest_ssh_port": 22, "guest_command_timeout": 300, "parallel_vms": 2, "full_every_runs": 0}
    form |= {"keep_last": 7, "keep_days": 0, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}
    form |= {"proof_schedule": "0 6 * * *"}
    response = client.post(reverse("policy-new"), form | {"vms": [vms["web01"].pk, vms["app01"].pk]})
    assert response.status_code == 302, response.context["form"].errors
    assert set(Policy.objects.get(name="picked").vms.values_list("name", flat=True)) == {"web01", "app01"}
    # The model's own check (a window with one end) answers on the form, in its section.
    refused = client.post(reverse("policy-new"), form | {"name": "other", "window_start": "22:00"}).content.decode()
    assert 'data-field="window_end"' in refused and "Give both ends of the backup window" in refused
    assert "The policy was not saved" in refused


@pytest.mark.parametrize(
    "schedule, words",
    [
        ("30 1 * * *", "At 01:30 every day"),
        ("0 */4 * * *", "Every 4 hours at minute 0"),
        ("0 22 * * 1-5", "At 22:00 on Monday to Friday"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("0 2 * * 6,0", "At 02:00 on Saturday and Sunday"),
        ("0 3 1,15 * *", "At 03:00 on days 1 and 15 of the month"),
        ("0 3 L * *", "At 03:00 on the last day of the month"),
        ("0 2 * * 5#2", "At 02:00 on the second Friday of the month"),
        ("0 1,13 * * *", "At 01:00 and 13:00 every day"),
        ("0 8-18 * * 1-5", "Every hour at minute 0, from 08:00 to 18:59 on Monday to Friday"),
        ("0 0 1 1-3 *", "At 00:00 on day 1 of the month in January to March"),
    ],
)
def test_it_says_a_schedule_in_words(schedule, words):
    assert describe(schedule) == words


def test_it_previews_a_schedule_as_typed_with_the_schedulers_next_five_runs(client, users):
    client.force_login(users[roles.VIEWER])  # reading only: a viewer may ask
    url = reverse("policy-schedule-preview")
    html = client.get(url, {"schedule": "0 22 * * 1-5"}).content.decode()
    assert "At 22:00 on Monday to Friday" in html
    shown = re.findall(r'<time datetime="[^"]+">([^<]+)</time>', html)
    # The scheduler's own answer: each run the next after the one before, as the ticker asks.
    policy, expected, after = Policy(schedule="0 22 * * 1-5"), [], timezone.now()
    for _ in range(5):
        after = policy.next_run(after=after)
        expected.append(when(after))
    assert shown == expected and len(shown) == 5
    assert all(re.search(r"</time> <small>(Monday|Tuesday|Wednesday|Thursday|Friday)</small>", html) for _ in shown)
    # The restore proofs' field asks with its own name.
    assert "At 06:00 every day" in client.get(url, {"proof_schedule": "0 6 * * *"}).content.decode()


@pytest.mark.parametrize(
    "schedule, error",
    [
        ("61 * * * *", "a value is out of its field's range (minute 0-59"),
        ("0 2", "is not a cron schedule; use five fields"),
        ("0 2 30 2 *", "never fires: no date matches it within a year"),
        ("", "Give a schedule"),
    ],
)
def test_it_explains_a_bad_schedule_in_words(client, users, schedule, error):
    client.force_login(users[roles.VIEWER])
    html = client.get(reverse("policy-schedule-preview"), {"schedule": schedule}).content.decode()
    assert 'class="error schedule-error"' in html and error in html.replace("&#x27;", "'")
    assert "<time" not in html


def test_it_asks_for_a_login_before_a_preview(client, users):
    assert client.get(reverse("policy-schedule-preview"), {"schedule": "0 1 * * *"}).status_code == 302
    client.force_login(users[None])
    assert client.get(reverse("policy-schedule-preview"), {"schedule": "0 1 * * *"}).status_code == 403


def test_it_shows_the_schedule_in_words_and_next_runs_without_javascript(client, users, nightly):
    client.force_login(users[roles.VIEWER])
    page = client.get(reverse("policy-detail", args=[nightly.pk])).content.decode()
    assert "At 01:30 every day" in page
    runs = next_runs("30 1 * * *", 5)
    assert [when(t) for t in runs] == re.findall(r'<time datetime="[^"]+">([^<]+)</time>', page)
    assert when(nightly.next_run()) == when(runs[0])
    # The form, before any typing, shows the same under its field; a refused schedule shows why.
    client.force_login(users[roles.OPERATOR])
    form = client.get(reverse("policy-edit", args=[nightly.pk])).content.decode()
    assert 'id="schedule-preview"' in form and "At 01:30 every day" in form
    assert 'hx-get="/policies/schedule-preview/"' in form and 'hx-trigger="keyup changed delay:400ms, change"' in form
    refused = client.post(reverse("policy-edit", args=[nightly.pk]), {"name": "nightly", "schedule": "0 25 * * *"})
    assert "a value is out of its field&#x27;s range" in refused.content.decode()


def test_it_counts_what_retention_would_keep_today(client, users, nightly, inventory):
    """Keep the last 3: of db01's five fulls, the two oldest go; web01's two stay; a backup made by hand
    is not the policy's and is kept, counted apart."""
    now = timezone.now()
    vms = inventory["vms"]

    def full(vm, days_ago, policy=nightly):
        return BackupPoint.objects.create(
            vm=vm,
            destination=nightly.destination,
            policy=policy,
            strategy="image_transfer",
            status=BackupPoint.Status.COMPLETE,
            started=now - timedelta(days=days_ago),
        )

    for days in range(5):
        full(vms["db01"], days)
    full(vms["web01"], 1), full(vms["web01"], 2)
    full(vms["web01"], 9, policy=None)
    summary = summarize_retention(nightly, now=now)
    assert (summary.points, summary.kept, summary.removed, summary.merged) == (7, 5, 2, 0)
    assert summary.kept_by_others == 1
    assert summary.words == "Keeps 5 of 7 backups; would remove 2 (not one of the last 3)."
    client.force_login(users[roles.VIEWER])
    page = client.get(reverse("policy-detail", args=[nightly.pk])).content.decode()
    assert "Keeps 5 of 7 backups; would remove 2 (not one of the last 3)." in page
    assert "1 backup of the same VMs made by hand or by another policy is kept as it is." in page
    rows = re.findall(r"<tr><td><a [^>]+>(\w+)</a></td><td>(\d+)</td><td>(\d+)</td><td>(?:<strong>)?(\d+)", page)
    assert rows == [("db01", "5", "3", "2"), ("web01", "2", "2", "0")]


def test_it_says_a_policy_without_backups_keeps_nothing(nightly):
    assert summarize_retention(nightly).words == "This policy has no backups yet: nothing to keep or remove."


def test_it_previews_in_the_sites_time_zone(settings):
    settings.TIME_ZONE = "Europe/Paris"
    timezone.activate("Europe/Paris")
    try:
        after = datetime(2026, 3, 28, 12, 0, tzinfo=timezone.get_current_timezone())
        preview = preview_schedule("30 2 * * *", after=after)
        # 02:30 does not exist on the spring change day: it runs as the clocks jump (the scheduler's rule).
        assert [when(t) for t in preview.runs[:2]] == ["2026-03-29 03:00", "2026-03-30 02:30"]
    finally:
        timezone.deactivate()


def test_it_asks_as_many_queries_for_the_form_with_30_vms_as_with_3(client, users, nightly, inventory):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(users[roles.OPERATOR])
    url = reverse("policy-edit", args=[nightly.pk])

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return len(ctx)

    few = queries()
    manager, cluster = Manager.objects.get(), inventory["cluster"]
    VM.objects.bulk_create(
        VM(manager=manager, engine_id=f"00000000-0000-0000-0001-{n:012d}", name=f"vm{n:02d}", cluster=cluster)
        for n in range(27)
    )
    assert queries() == few
