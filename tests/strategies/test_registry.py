"""One registry of strategies: discovered from their packages, offered only where they can run."""

import io
import re
from pathlib import Path

import pytest
from django.urls import reverse

from core import roles
from inventory.models import VM, Disk, Host, Manager
from jobs.models import Job
from policies.models import Policy
from repository.models import BackupDestination
from strategies.forms import BackupNowForm
from strategies.registry import all_strategies, default_strategy_name, get_strategy, strategy_options

README = Path(__file__).resolve().parents[2] / "README.md"
ARCHITECTURE = README.parent / "docs" / "architecture.md"
NOT_YET = "not implemented in this version yet"


@pytest.fixture
def vm(db):
    manager = Manager.objects.create(
        name="m", api_url="https://e.example/ovirt-engine/api", username="admin@internal", engine_version="4.5.4"
    )
    host = Host.objects.create(manager=manager, engine_id="22222222-2222-2222-2222-222222222222", name="h1")
    vm = VM.objects.create(manager=manager, engine_id="11111111-1111-1111-1111-111111111111", name="web01", host=host)
    Disk.objects.create(
        manager=manager, vm=vm, engine_id="33333333-3333-3333-3333-333333333333", name="web01_os", format="raw"
    )
    return vm


@pytest.fixture
def unimplemented(monkeypatch) -> str:
    """Every strategy is implemented today: one is made a strategy of a later version for the test."""
    monkeypatch.setattr(all_strategies()["export_domain"], "implemented", False)
    return "export_domain"


def reasons(vm) -> dict[str, str]:
    return {name: reason for name, _, reason in strategy_options(vm)}


def test_it_discovers_one_package_per_strategy():
    strategies = all_strategies()
    assert set(strategies) == {"image_transfer", "cbt", "ssh_transfer", "disk_attachment", "export_domain"}
    assert default_strategy_name() == "image_transfer"
    for name, cls in strategies.items():
        assert cls.__module__ == f"strategies.{name}", "each strategy lives in a package of its own name"
        assert cls.label and cls.min_api_version
    assert strategies["export_domain"].display_label().endswith("(deprecated)")
    assert (strategies["image_transfer"].incremental, strategies["disk_attachment"].incremental) == (True, False)


def test_it_says_why_a_strategy_cannot_back_a_vm_up(vm):
    assert reasons(vm) == {
        "image_transfer": "",
        "cbt": "no disk of this VM has incremental backup enabled",
        "ssh_transfer": "",
        "disk_attachment": "the VM has no cluster, so no proxy VM of its cluster can read its disks",
        "export_domain": "the VM's data center is not known, so neither is its export domain",
    }
    # Once implemented, the strategy's own requirements speak (checked on the classes themselves).
    disks = list(vm.disks.select_related("manager"))
    cbt, ssh = all_strategies()["cbt"], all_strategies()["ssh_transfer"]
    assert cbt.vm_blocker(vm, disks) == "no disk of this VM has incremental backup enabled"
    assert ssh.vm_blocker(vm, disks) == ""  # a host always has credentials: at least root with the site key
    Disk.objects.filter(vm=vm).update(format="cow", incremental_backup=True)
    assert reasons(vm)["cbt"] == ""
    Manager.objects.filter(pk=vm.manager_id).update(engine_version="4.3.10")
    vm.refresh_from_db()
    assert reasons(vm)["cbt"] == "needs engine API 4.4+"
    Manager.objects.filter(pk=vm.manager_id).update(engine_version="4.1.9")
    vm.refresh_from_db()
    assert reasons(vm)["image_transfer"] == "needs engine API 4.2+"


def test_it_refuses_an_unimplemented_strategy_by_name(unimplemented):
    with pytest.raises(LookupError, match=r"The Export storage domain strategy is not available in this version"):
        get_strategy("export_domain")
    with pytest.raises(LookupError, match="Unknown strategy 'tape'"):
        get_strategy("tape")


def test_it_refuses_an_unimplemented_strategy_in_the_api(vm, api_as, destination_dir, unimplemented):
    destination = BackupDestination.objects.create(name="d", path=str(destination_dir))
    client = api_as(roles.OPERATOR)
    body = {"name": "p", "destination": destination.pk, "strategy": "export_domain"}
    response = client.post(reverse("api:policy-list"), body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["strategy"] == [
        "The Export storage domain strategy is not available in this version yet."
    ]
    assert not Policy.objects.exists()

    response = client.post(
        reverse("api:vm-backup", kwargs={"pk": vm.pk}),
        {"strategy": "export_domain", "destination": "d"},
        format="json",
    )
    assert response.status_code == 400
    assert "not available in this version yet" in response.json()["error"]["message"]
    assert not Job.objects.exists()


def test_it_offers_only_strategies_that_can_run_and_says_why_not(vm, destination_dir):
    BackupDestination.objects.create(name="d", path=str(destination_dir))
    form = BackupNowForm(vm=vm)
    assert [name for name, _ in form.fields["strategy"].choices] == ["image_transfer", "ssh_transfer"]
    assert (
        "Change block tracking (no disk of this VM has incremental backup enabled)" in form.fields["strategy"].help_text
    )
    form = BackupNowForm({"strategy": "cbt", "type": "full", "destination": ""}, vm=vm)
    assert not form.is_valid() and "strategy" in form.errors
    # The SSH transfer is offered where a host can be logged in to: with a key (its own or the site's)
    # or a password alone; not for a VM no host can read.
    Host.objects.filter(pk=vm.host_id).update(ssh_password="secret")
    vm.refresh_from_db()
    assert "ssh_transfer" in [name for name, _ in BackupNowForm(vm=vm).fields["strategy"].choices]
    VM.objects.filter(pk=vm.pk).update(host=None)
    vm.refresh_from_db()
    assert reasons(vm)["ssh_transfer"] == "no host of the VM's cluster is up to read its volumes on"


def test_it_refuses_an_unimplemented_strategy_on_the_command_line(vm, destination_dir, unimplemented):
    from django.core.management import CommandError, call_command

    BackupDestination.objects.create(name="d", path=str(destination_dir))
    with pytest.raises(CommandError, match=r"The Export storage domain strategy is not available in this version yet"):
        call_command("backup", "web01", "--strategy", "export_domain", "--destination", "d")
    assert not Job.objects.exists()


def readme_strategies() -> dict[str, tuple[str, bool, bool, str]]:
    """The README's table of strategies: name -> (label, implemented, incremental, engine API)."""
    section = README.read_text().split("\n## Strategies\n", 1)[1].split("\n#", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if re.match(r"\| .* \| `\w+` \|", line)]
    yes = {"yes": True, "no": False}
    return {
        name.strip(" `"): (label.strip(), yes[implemented.strip()], yes[incremental.strip()], api.strip())
        for label, name, implemented, incremental, api, *_ in rows
    }


def test_it_lists_in_the_readme_the_strategies_the_registry_has():
    """What the README promises is what runs: the same strategies, implemented or not, as registered."""
    registered = {
        name: (cls.display_label(), cls.implemented, cls.incremental, "{}.{}+".format(*cls.min_api_version))
        for name, cls in all_strategies().items()
    }
    assert readme_strategies() == registered


def test_it_describes_the_steps_of_every_implemented_strategy_in_the_architecture():
    header = next(line for line in ARCHITECTURE.read_text().splitlines() if line.startswith("| step | what it does |"))
    described = [column.strip() for column in header.strip("|").split("|")[2:]]
    assert set(described) == {name for name, cls in all_strategies().items() if cls.implemented}


NETCAT_ELSEWHERE = (
    "Option netcat is the SSH transfer strategy's (ssh_transfer), not the Disk image transfer strategy's; "
    "the Disk image transfer strategy has no options. Choose ssh_transfer or leave netcat out."
)
UNKNOWN_OPTION = "Unknown option 'compress': the SSH transfer strategy's options are: netcat."


def test_it_checks_a_backups_options_against_its_strategys_schema_in_the_api(vm, api_as, destination_dir):
    """One declared schema (Strategy.options): the API refuses an unknown option, another strategy's
    and a bad value, naming the strategy's options, and takes netcat for the SSH transfer."""
    BackupDestination.objects.create(name="d", path=str(destination_dir))
    client = api_as(roles.OPERATOR)
    url = reverse("api:vm-backup", kwargs={"pk": vm.pk})

    def post(strategy, **body):
        response = client.post(url, {"strategy": strategy, "destination": "d", **body}, format="json")
        return response.status_code, response.json()

    assert post("image_transfer", options={"netcat": True}) == (400, ANY_ERROR(NETCAT_ELSEWHERE))
    assert post("ssh_transfer", options={"compress": True}) == (400, ANY_ERROR(UNKNOWN_OPTION))
    assert post("ssh_transfer", options={"netcat": "maybe"}) == (400, ANY_ERROR("is true or false, not 'maybe'"))
    assert post("ssh_transfer", netcat=True) == (  # beside the fields, as the API once took it
        400,
        ANY_ERROR(
            "netcat: Unknown field; the fields are strategy, type, destination, exclude, options. "
            'A strategy\'s options go in options: {"netcat": ...}.'
        ),
    )
    assert not Job.objects.exists()
    status, body = post("ssh_transfer", options={"netcat": True})
    assert status == 202, body
    assert Job.objects.get(pk=body["job"]).params["options"] == {"netcat": True}


class ANY_ERROR:
    """Equal to an error body whose message holds `text`."""

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, body) -> bool:
        return isinstance(body, dict) and self.text in body.get("error", {}).get("message", "")

    def __repr__(self) -> str:
        return f"an error saying {self.text!r}"


def test_it_checks_a_backups_options_on_the_form_and_the_command_line(vm, destination_dir):
    from django.core.management import CommandError, call_command

    destination = BackupDestination.objects.create(name="d", path=str(destination_dir))
    # The form offers every implemented strategy's options, from their schemas, and refuses one set for
    # a strategy that is not the chosen one on its field.
    form = BackupNowForm(
        {"strategy": "image_transfer", "type": "full", "destination": destination.pk, "ssh_transfer__netcat": "on"},
        vm=vm,
    )
    assert form.fields["ssh_transfer__netcat"].label == "SSH transfer through netcat"
    assert not form.is_valid() and form.errors["ssh_transfer__netcat"] == [NETCAT_ELSEWHERE]
    form = BackupNowForm(
        {"strategy": "ssh_transfer", "type": "full", "destination": destination.pk, "ssh_transfer__netcat": "on"},
        vm=vm,
    )
    assert form.is_valid(), form.errors
    assert form.cleaned_data["options"] == {"netcat": True}

    def backup(*args):
        call_command("backup", "web01", "--destination", "d", *args, stdout=io.StringIO())

    with pytest.raises(CommandError, match=re.escape(NETCAT_ELSEWHERE)):
        backup("--strategy", "image_transfer", "--option", "netcat")
    with pytest.raises(CommandError, match=re.escape(UNKNOWN_OPTION)):
        backup("--strategy", "ssh_transfer", "--option", "compress=yes")
    with pytest.raises(CommandError, match="Option netcat is true or false, not 'maybe'"):
        backup("--strategy", "ssh_transfer", "--option", "netcat=maybe")
    assert not Job.objects.exists()
    backup("--strategy", "ssh_transfer", "--option", "netcat=yes")
    assert Job.objects.get().params["options"] == {"netcat": True}


def test_it_calls_the_abandon_hook_of_a_dead_backups_strategy(db, monkeypatch):
    """A dead backup's strategy undoes what only a node can (Strategy.abandon): the SSH transfer's
    LVs on hosts, through their registered undo (one whose host is gone is said, and stays recorded)."""
    from strategies.backup import BACKUP, abandon_backup
    from strategies.image_transfer import ImageTransferStrategy

    def dead_backup(strategy: str) -> Job:
        job = Job.objects.create(kind=BACKUP, name="b", params={"strategy": strategy})
        job.start()
        job.fail("The worker running this job stopped responding.")  # as the reaper does, before the hook
        return job

    called = []
    monkeypatch.setattr(ImageTransferStrategy, "abandon", classmethod(lambda cls, job: called.append(job.pk)))
    job = dead_backup("image_transfer")
    abandon_backup(job)
    assert called == [job.pk]

    job = Job.objects.create(kind=BACKUP, name="b", params={"strategy": "ssh_transfer"})
    job.start()
    job.remember_engine_object("lv", "vg-of-a-domain/a-volume", host=987654)
    job.fail("The worker running this job stopped responding.")
    abandon_backup(job)
    error = job.events.get(level="error", message__startswith="Could not undo").message
    assert error == (
        "Could not undo: logical volume vg-of-a-domain/a-volume active on a host: Logical volume "
        "vg-of-a-domain/a-volume stays active: its host is no longer in the inventory"
    )
    assert [o["id"] for o in job.engine_objects] == ["vg-of-a-domain/a-volume"]

    job = dead_backup("teleport")
    abandon_backup(job)
    job.refresh_from_db()
    assert "Its strategy 'teleport' is unknown to this version." in job.error
