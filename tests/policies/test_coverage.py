"""Which policy covers a VM, and why: one answer on every page, the API, the CLI and Back up now."""

import io

import pytest
from django.core.management import call_command
from django.urls import reverse

from core import roles
from inventory.models import VM, Cluster
from jobs.models import Job
from policies.coverage import coverage_of, with_coverage
from policies.models import Policy
from strategies.backup import request_backup


@pytest.fixture
def policies(manager, destination):
    """prod: production-tagged VMs but not web*; everything: all VMs but those tagged no-backup;
    dev: test01 listed explicitly (the exclusions are for its rules only)."""
    prod = Policy.objects.create(
        name="prod", priority=10, destination=destination, match_tag="production", exclude_name_regex="^web"
    )
    everything = Policy.objects.create(
        name="everything", priority=50, destination=destination, match_name_regex=".", exclude_tag="no-backup"
    )
    dev = Policy.objects.create(
        name="dev",
        priority=60,
        destination=destination,
        match_cluster=Cluster.objects.get(name="Development"),
        exclude_tag="no-backup",
    )
    dev.vms.add(VM.objects.get(name="test01"))
    return {"prod": prod, "everything": everything, "dev": dev}


def covering(vms) -> dict[str, tuple[str | None, str | None]]:
    names = dict(Policy.objects.values_list("pk", "name"))
    return {
        vm.name: (names.get(vm.covering_policy_id), vm.coverage_reason)
        for vm in with_coverage(vms.filter(missing_since=None))
    }


def test_it_applies_rules_exclusions_and_priority(policies):
    found = covering(VM.objects.all())
    assert found["db01"] == ("prod", "tag production")  # "everything" matches too; prod's priority is higher
    assert found["web01"] == ("everything", "name matches .")  # excluded from prod by name
    assert found["test01"] == ("dev", "listed explicitly")  # its tag excludes it from every rule, not from a list
    assert found["app01"] == ("everything", "name matches .")
    db01 = VM.objects.get(name="db01")
    assert [(p.name, why) for p, why in coverage_of(db01)] == [
        ("prod", "tag production"),
        ("everything", "name matches ."),
    ]


def test_it_ignores_disabled_policies(policies):
    Policy.objects.filter(name="prod").update(enabled=False)
    assert covering(VM.objects.all())["db01"] == ("everything", "name matches .")
    Policy.objects.update(enabled=False)
    assert set(covering(VM.objects.all()).values()) == {(None, None)}


def test_it_backs_up_now_with_the_policy_the_inventory_shows(policies):
    # The issue: the inventory showed db01 protected (by a rule) while Back up now said no enabled
    # policy covers it, since it read the explicit VMs only.
    job = request_backup(vm=VM.objects.get(name="db01"), origin=Job.Origin.PAGE)
    assert job.started_by == policies["prod"]
    assert job.params["destination"] == policies["prod"].destination_id


def test_it_shows_the_same_coverage_on_the_pages_the_api_and_the_cli(client, users, api_as, policies):
    client.force_login(users[roles.VIEWER])
    db01 = VM.objects.get(name="db01")
    page = client.get(reverse("vm-detail", args=[db01.pk])).content.decode()
    assert "prod</a> (tag production); also matched by" in page and "prod wins, its priority is higher" in page

    rows = client.get(reverse("vm-list")).content.decode()
    assert "prod</a> <small>(tag production)</small>" in rows

    page = client.get(reverse("policy-detail", args=[policies["everything"].pk])).content.decode()
    assert "backed up by" in page and "prod</a>, whose priority is higher" in page

    answer = api_as(roles.VIEWER).get(reverse("api:vm-list"), {"name": "db01"}).json()
    (vm,) = [v for v in answer["results"] if v["name"] == "db01"]
    assert vm["policy"] == {"id": policies["prod"].pk, "name": "prod", "reason": "tag production"}
    assert vm["protected"] is True

    out = io.StringIO()
    call_command("policy_vms", "everything", stdout=out)
    lines = out.getvalue().splitlines()
    assert "db01\tname matches .\tbacked up by prod (higher priority)" in lines
    assert "web01\tname matches ." in lines
    assert not any(line.startswith("test01") for line in lines)


def test_it_lists_vms_and_a_policy_page_in_a_bounded_number_of_queries(
    client, users, policies, django_assert_max_num_queries
):
    # 40 more VMs, each covered: a query per VM (or per policy and VM) would show.
    db01 = VM.objects.get(name="db01")
    for n in range(40):
        vm = VM.objects.create(
            manager=db01.manager, engine_id=f"00000000-0000-0000-0000-{n:012d}", name=f"db{n + 2:02d}"
        )
        vm.tags.set(db01.tags.all())
    client.force_login(users[roles.VIEWER])
    with django_assert_max_num_queries(17):
        assert client.get(reverse("vm-list")).status_code == 200
    with django_assert_max_num_queries(12):
        assert client.get(reverse("policy-detail", args=[policies["prod"].pk])).status_code == 200
    with django_assert_max_num_queries(10):
        assert client.get(reverse("policy-list")).status_code == 200
