"""The inventory list (size, policy and why, last backup, RPO status, filters, bulk actions), a VM's
page (next run, chains, storage and change-rate charts) and a host's page, from database rows."""

import datetime
import html
import re
import xml.etree.ElementTree as ET

import pytest
from django.urls import reverse
from django.utils import timezone

from core import roles
from core.formats import duration
from inventory.models import VM, Cluster, DataCenter, Disk, Host, Manager
from jobs.models import Job
from policies.models import Policy
from policies.rpo import rpo_of, rpo_status_of_vms
from repository.models import BackupDestination, BackupPoint

SVG = "{http://www.w3.org/2000/svg}"

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)


def _uuid(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012d}"


@pytest.fixture
def estate(db, tmp_path):
    return make_inventory(tmp_path)


def make_inventory(tmp_path) -> dict:
    """Four VMs under a nightly policy (web01 fine, web02 stale, web03 failing) and db01 covered by none."""
    manager = Manager.objects.create(name="e", api_url="https://e.example/ovirt-engine/api", username="a@internal")
    dc = DataCenter.objects.create(manager=manager, engine_id=_uuid(900), name="dc1")
    cluster = Cluster.objects.create(manager=manager, engine_id=_uuid(901), name="prod", data_center=dc)
    host = Host.objects.create(
        manager=manager,
        engine_id=_uuid(902),
        name="host1",
        address="10.0.0.5",
        status=Host.Status.UP,
        cluster=cluster,
        vdsm_version="4.50.5.1",
        libvirt_version="9.0.0.10",
    )
    (tmp_path / "nas").mkdir()
    nas = BackupDestination.objects.create(name="nas", path=str(tmp_path / "nas"))
    nightly = Policy.objects.create(name="nightly-prod", destination=nas, match_name_regex="^web", schedule="0 1 * * *")
    vms = {}
    now = timezone.now()
    for n, name in enumerate(["web01", "web02", "web03", "db01"]):
        vm = VM.objects.create(
            manager=manager, engine_id=_uuid(n), name=name, cluster=cluster, host=host, status="up", os_type="rhel_9x64"
        )
        for d in range(2):
            Disk.objects.create(
                manager=manager,
                engine_id=_uuid(100 + 10 * n + d),
                name=f"{name}_d{d}",
                vm=vm,
                provisioned_size=10 * 2**30,
            )
        vms[name] = vm
    good = {"web01": now - 2 * HOUR, "web02": now - 3 * DAY, "web03": now - 5 * HOUR}
    for name, started in good.items():
        BackupPoint.objects.create(
            vm=vms[name], destination=nas, strategy="image_transfer", status="complete", started=started
        )
        Job.objects.create(kind="backup", vm=vms[name], name=name, status="succeeded", finished=started + HOUR / 6)
    Job.objects.create(
        kind="backup",
        vm=vms["web03"],
        name="web03",
        status="failed",
        finished=now - HOUR,
        error="Disk web03_d0 is locked.",
    )
    return {"manager": manager, "host": host, "nas": nas, "nightly": nightly, "vms": vms, "cluster": cluster}


def text(response) -> str:
    """The page as read: the non-breaking spaces that keep figures on one line read as spaces."""
    return response.content.decode().replace("\xa0", " ")


def rows_of(page: str) -> list[str]:
    return re.findall(r'data-vm="([^"]+)"', page)


def test_it_classifies_each_vm_by_its_rpo(estate):
    found = dict(rpo_status_of_vms(VM.objects.all()).values_list("name", "rpo_status"))
    assert found == {"web01": "ok", "web02": "stale", "web03": "failing", "db01": "uncovered"}


def test_it_lists_size_policy_last_backup_and_rpo_status(client, users, estate):
    client.force_login(users[roles.VIEWER])
    page = text(client.get(reverse("vm-list")))
    assert rows_of(page) == ["db01", "web01", "web02", "web03"]
    web03 = page[page.index('data-vm="web03"') :]
    web03 = web03[: web03.index("</tr>")]
    assert "20.0 GiB" in web03
    assert "nightly-prod</a> <small>(name matches ^web)</small>" in web03
    assert "Failed</span>" in web03 and "1 h ago" in web03 and "last good 5 h ago" in web03
    assert 'title="Disk web03_d0 is locked."' in web03
    assert '<span class="rpo failing" title="Its last backup attempt failed">Failing</span>' in web03
    assert '<span class="rpo uncovered" title="No enabled policy covers it">Not covered</span>' in page
    objective = duration(rpo_of(estate["nightly"]))  # a day's gap and some grace
    assert f'title="No good backup within its RPO ({objective})">Stale<' in page
    # Every filter control has a label.
    for name in ("q", "tag", "rpo", "missing"):
        assert re.search(rf'<label[^>]*>[^<]*<(input|select)[^>]*name="{name}"', page), name
    # A viewer may look, not act.
    assert "Back up selected" not in page and 'name="vm"' not in page


@pytest.mark.parametrize(
    "rpo, names", [("ok", ["web01"]), ("stale", ["web02"]), ("failing", ["web03"]), ("uncovered", ["db01"])]
)
def test_it_filters_the_list_by_rpo_status(client, users, estate, rpo, names):
    client.force_login(users[roles.VIEWER])
    page = text(client.get(reverse("vm-list"), {"rpo": rpo}))
    assert rows_of(page) == names
    assert f'<option value="{rpo}" selected>' in page  # the filter's state is shown, as in the address


@pytest.mark.parametrize(
    "query, names",
    [
        # No VM name or tag holds a NUL, and PostgreSQL refuses one in a query.
        ({"q": "web\x00"}, []),
        ({"tag": "\x00"}, []),
    ],
)
def test_it_answers_nonsense_in_the_list_filters_without_failing(client, users, estate, query, names):
    client.force_login(users[roles.VIEWER])
    response = client.get(reverse("vm-list"), query)
    assert response.status_code == 200
    assert rows_of(text(response)) == names


@pytest.mark.parametrize(
    "query, says",
    [
        ({"rpo": "zzz"}, 'There is no RPO status "zzz": choose one of ok (ok), stale (stale)'),
        # A superscript two is a digit to str.isdigit() but no number to int().
        ({"cluster": "²"}, '"²" is not a cluster of the inventory'),
        ({"datacenter": "x"}, '"x" is not a data center of the inventory'),
    ],
)
def test_it_says_which_list_filter_it_cannot_read(client, users, estate, query, says):
    client.force_login(users[roles.VIEWER])
    response = client.get(reverse("vm-list"), query)
    assert response.status_code == 400
    assert says in html.unescape(text(response)) and rows_of(text(response)) == []  # never the whole list


def test_it_answers_htmx_with_the_rows_and_a_history_restore_with_the_page(client, users, estate):
    client.force_login(users[roles.VIEWER])
    rows = client.get(reverse("vm-list"), {"q": "web", "rpo": "stale"}, HTTP_HX_REQUEST="true")
    assert "<html" not in rows.content.decode() and rows_of(rows.content.decode()) == ["web02"]
    assert "HX-Request" in rows["Vary"]
    page = client.get(reverse("vm-list"), {"q": "web"}, HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in text(page)


def test_it_backs_up_the_selected_vms_as_back_up_now_does(client, users, estate):
    vms = estate["vms"]
    client.force_login(users[roles.OPERATOR])
    list_url = reverse("vm-list") + "?rpo=stale"
    response = client.post(
        reverse("vm-bulk"),
        {"action": "backup", "vm": [vms["web01"].pk, vms["web02"].pk, vms["db01"].pk]},
        HTTP_REFERER="http://testserver" + list_url,
    )
    assert response.status_code == 302 and response["Location"] == "http://testserver" + list_url
    queued = Job.objects.filter(status="queued", kind="backup")
    assert sorted(queued.values_list("name", flat=True)) == ["web01", "web02"]
    assert {j.params["destination"] for j in queued} == {estate["nas"].pk}
    assert {j.owner for j in queued} == {users[roles.OPERATOR]} and {j.origin for j in queued} == {"page"}
    page = text(client.get(list_url))
    # Each queued job is a link to its page, where it is followed.
    web01, web02 = queued.get(name="web01"), queued.get(name="web02")
    assert (
        f'Queued 2 backups: web01 (<a href="/jobs/{web01.pk}/">job {web01.pk}</a>), '
        f'web02 (<a href="/jobs/{web02.pk}/">job {web02.pk}</a>).'
    ) in page
    # The VM no policy covers: the list says what to do about it, on the same page.
    assert "Not queued: db01 (no enabled policy covers it: choose a Destination for it and back it up again)." in page
    # A second time: the backups are already queued, and it says so.
    client.post(reverse("vm-bulk"), {"action": "backup", "vm": [vms["web01"].pk]})
    assert "A backup of web01 is already queued" in text(client.get(list_url))
    assert queued.count() == 2


def test_it_backs_up_the_selected_vms_to_the_destination_chosen(client, users, estate, tmp_path):
    vms, nas = estate["vms"], estate["nas"]
    (tmp_path / "offsite").mkdir()
    offsite = BackupDestination.objects.create(name="offsite", path=str(tmp_path / "offsite"))
    client.force_login(users[roles.OPERATOR])
    page = text(client.get(reverse("vm-list")))
    form = page[page.index('<form id="vm-bulk"') :]
    form = form[: form.index("</form>")]
    chooser = '<label>Destination <select name="destination"><option value="">Each VM\'s policy destination</option>'
    assert chooser in form
    assert f'<option value="{offsite.pk}">offsite</option>' in form and f'<option value="{nas.pk}">nas</option>' in form
    # db01, which no policy covers, and web01, which nightly-prod covers: both to the destination
    # chosen, as a VM's own "Back up now" page does; web01's backup still runs under its policy.
    client.post(
        reverse("vm-bulk"), {"action": "backup", "destination": offsite.pk, "vm": [vms["db01"].pk, vms["web01"].pk]}
    )
    queued = Job.objects.filter(status="queued", kind="backup")
    assert {j.name: j.params["destination"] for j in queued} == {"db01": offsite.pk, "web01": offsite.pk}
    assert queued.get(name="web01").started_by == estate["nightly"] and queued.get(name="db01").started_by is None
    page = text(client.get(reverse("vm-list")))
    db01 = queued.get(name="db01")
    assert f'Queued 2 backups to offsite: db01 (<a href="/jobs/{db01.pk}/">job {db01.pk}</a>), web01 (' in page
    assert "Not queued" not in page


@pytest.mark.parametrize("destination", ["999999", "abc", "disabled"])
def test_it_says_when_the_destination_chosen_is_not_one(client, users, estate, tmp_path, destination):
    if destination == "disabled":
        (tmp_path / "old").mkdir()
        destination = BackupDestination.objects.create(name="old", path=str(tmp_path / "old"), enabled=False).pk
    client.force_login(users[roles.OPERATOR])
    response = client.post(
        reverse("vm-bulk"), {"action": "backup", "destination": destination, "vm": [estate["vms"]["db01"].pk]}
    )
    assert response.status_code == 302
    assert (
        f"There is no enabled destination {destination} (removed or disabled since the page was loaded?): "
        "choose one in the Destination list."
    ) in html.unescape(text(client.get(reverse("vm-list"))))
    assert not Job.objects.filter(status="queued").exists()


def test_it_lists_the_selected_vms_in_a_policy(client, users, estate):
    vms, nightly = estate["vms"], estate["nightly"]
    other = Policy.objects.create(name="weekly", destination=estate["nas"], schedule="0 3 * * 0")
    other.vms.add(vms["db01"])
    client.force_login(users[roles.OPERATOR])
    client.post(reverse("vm-bulk"), {"action": "assign", "policy": other.pk, "vm": [vms["db01"].pk, vms["web01"].pk]})
    assert set(other.vms.values_list("name", flat=True)) == {"db01", "web01"}
    page = text(client.get(reverse("vm-list")))
    assert "Added 1 VM to weekly. 1 VM was listed in it already." in page
    client.post(reverse("vm-bulk"), {"action": "assign", "policy": nightly.pk, "vm": [vms["db01"].pk]})
    assert "Added 1 VM to nightly-prod." in text(client.get(reverse("vm-list")))
    # No policy chosen, no VM ticked: said, nothing done.
    client.post(reverse("vm-bulk"), {"action": "assign", "vm": [vms["web02"].pk]})
    assert "Choose the policy" in text(client.get(reverse("vm-list")))
    client.post(reverse("vm-bulk"), {"action": "backup"})
    assert "no VM was selected" in text(client.get(reverse("vm-list")))
    assert not Job.objects.filter(status="queued").exists()


def test_it_refuses_bulk_actions_to_a_viewer(client, users, estate):
    vms = estate["vms"]
    client.force_login(users[roles.VIEWER])
    assert client.post(reverse("vm-bulk"), {"action": "backup", "vm": [vms["web01"].pk]}).status_code == 403
    choose = {"action": "backup", "destination": estate["nas"].pk, "vm": [vms["db01"].pk]}
    assert client.post(reverse("vm-bulk"), choose).status_code == 403
    response = client.post(
        reverse("vm-bulk"), {"action": "assign", "policy": estate["nightly"].pk, "vm": [vms["db01"].pk]}
    )
    assert response.status_code == 403
    assert not Job.objects.filter(status="queued").exists() and not estate["nightly"].vms.exists()


def test_it_shows_a_vms_next_run_chains_and_charts(client, users, estate, settings):
    settings.TIME_ZONE = "UTC"
    vm, nas = estate["vms"]["web01"], estate["nas"]
    start = timezone.now() - 3 * DAY
    full = BackupPoint.objects.create(
        vm=vm, destination=nas, strategy="cbt", status="complete", started=start, bytes_stored=4 * 2**30
    )
    parent = full
    for n in range(1, 3):
        parent = BackupPoint.objects.create(
            vm=vm,
            destination=nas,
            strategy="cbt",
            type="incremental",
            parent=parent,
            status="complete",
            started=start + n * DAY,
            bytes_stored=n * 2**30,
            bytes_transferred=n * 24 * 2**20,
        )
    BackupPoint.objects.create(vm=vm, destination=nas, strategy="cbt", status="failed", started=start + HOUR)
    client.force_login(users[roles.VIEWER])
    page = text(client.get(reverse("vm-detail", args=[vm.pk])))
    next_run = estate["nightly"].next_run()
    assert f"{next_run:%Y-%m-%d %H:%M}" in page and "by nightly-prod" in page
    objective = duration(rpo_of(estate["nightly"]))
    assert f'<span class="rpo ok">OK</span>: a good backup at least every {objective}' in page
    # The chain: the full, then its two incrementals, in one list; the failed attempt is not in it.
    chains = re.findall(r'<ol class="chain".*?</ol>', page, re.S)
    cbt = [c for c in chains if f"#{full.pk}<" in c]
    assert len(cbt) == 1 and re.findall(r">(Full|Incremental) #\d+<", cbt[0]) == ["Full", "Incremental", "Incremental"]
    assert "Change block tracking" in page
    # Storage: 4 GiB, then 5, then 7 (and the fixture's empty image transfer point, newest: 7 in all):
    # a dot per kept backup at its running total on an IEC axis, the same figures in the table.
    assert page.count('<figure class="chart') == 2
    first, second = BackupPoint.objects.filter(vm=vm, type="incremental").order_by("started")
    empty = BackupPoint.objects.filter(vm=vm, strategy="image_transfer").get()
    storage = chart_in(page, "storage")
    assert storage.get("aria-label") == "Storage used by web01's backups"
    dots = storage.findall(f".//{SVG}circle")
    assert [int(d.get("data-value")) / 2**30 for d in dots] == [4, 5, 7, 7]
    assert dots[1].find(f"{SVG}title").text == f"#{first.pk}, {first.started:%Y-%m-%d %H:%M}: 5.0 GiB"
    assert "8.0 GiB" in ticks_of(storage)
    assert f'<th scope="row">#{empty.pk}, {empty.started:%Y-%m-%d %H:%M}</th><td>7.0 GiB</td><td>0 bytes</td>' in page
    assert f'<th scope="row">#{second.pk}, {second.started:%Y-%m-%d %H:%M}</th><td>7.0 GiB</td><td>2.0 GiB</td>' in page
    # Change rate: 24 MiB over a day is 1 MiB an hour; 48 MiB, 2 MiB: a bar each, per hour on the axis.
    change = chart_in(page, "change-rate")
    bars = [r for r in change.iter(f"{SVG}rect") if "bar" in r.get("class").split()]
    assert [int(b.get("data-value")) / 2**20 for b in bars] == [1, 2]
    assert bars[0].find(f"{SVG}title").text == f"#{first.pk}, {first.started:%Y-%m-%d %H:%M}: 1.0 MiB/h change rate"
    assert "2.0 MiB/h" in ticks_of(change)
    row = f'<th scope="row">#{second.pk}, {second.started:%Y-%m-%d %H:%M}</th><td>2.0 MiB/h</td><td>48.0 MiB</td>'
    assert row + "<td>1 d</td></tr>" in page
    assert "a change rate needs two backups" not in page


def chart_in(page: str, section: str) -> ET.Element:
    """The SVG drawn in the page's section of that id, parsed (it would not parse if it were broken)."""
    part = page[page.index(f'<section class="vm-chart" id="{section}"') :]
    return ET.fromstring(part[part.index("<svg") : part.index("</svg>") + len("</svg>")])


def ticks_of(svg: ET.Element) -> list[str]:
    return [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "tick"]


def test_it_says_why_a_vm_has_no_change_rate(client, users, estate):
    vm = estate["vms"]["web01"]
    client.force_login(users[roles.VIEWER])
    page = text(client.get(reverse("vm-detail", args=[vm.pk])))
    change = chart_in(page, "change-rate")
    assert [t.text for t in change.iter(f"{SVG}text")] == ["No data"]
    assert "No incremental backups yet: a change rate needs two backups in a chain." in page


def test_it_shows_a_host_with_its_versions_ssh_and_vms(client, users, estate):
    host = estate["host"]
    client.force_login(users[roles.VIEWER])
    listing = text(client.get(reverse("host-list")))
    assert "<code>root@10.0.0.5:22</code> <small>the site key</small>" in listing and "@:" not in listing
    assert reverse("host-detail", args=[host.pk]) in listing
    page = text(client.get(reverse("host-detail", args=[host.pk])))
    assert "4.50.5.1" in page and "9.0.0.10" in page and ">Up</span>" in page
    assert "<code>root@10.0.0.5:22</code>" in page and "not known yet" in page
    assert rows_of(page) == [] and page.count('<tr class="vm">') == 4 and "web03" in page
    assert "Change SSH settings" not in page  # an admin's
    Host.objects.filter(pk=host.pk).update(address="")
    page = text(client.get(reverse("host-detail", args=[host.pk])))
    assert "no SSH access set" in page


def test_it_draws_a_chain_whose_incremental_names_another_strategy_in_its_fulls_group(client, users, estate):
    """An incremental joins its parent's chain even when its strategy differs (the VM page was a 500)."""
    vm = estate["vms"]["web01"]
    full = BackupPoint.objects.filter(vm=vm).get()
    inc = BackupPoint.objects.create(
        vm=vm,
        destination=full.destination,
        strategy="cbt",
        type="incremental",
        parent=full,
        status="complete",
        started=full.started + datetime.timedelta(hours=1),
    )
    client.force_login(users[roles.VIEWER])
    response = client.get(reverse("vm-detail", args=[vm.pk]))
    assert response.status_code == 200
    chain = re.search(r'<ol class="chain".*?</ol>', response.content.decode(), re.S).group(0)
    assert f"#{full.pk}" in chain and f"#{inc.pk}" in chain
