"""What the engine's user may do and what its hosts run, as the connection test and the strategies
tell them: the permits its roles lack, the hosts too old for a strategy."""

import pytest

from inventory.models import VM, Host
from inventory.sync import sync_manager
from jobs.errors import JobError
from ovirt.connection import test_connection
from strategies.cbt import CbtStrategy

# Everything the strategies and restore need but the image transfers' permit.
ALL_BUT_TRANSFERS = [
    "manipulate_vm_snapshots",
    "backup_disk",
    "create_disk",
    "import_export_vm",
    "configure_vm_storage",
    "delete_disk",
    "delete_vm",
    "create_vm",
]


def test_it_names_the_permits_the_engine_users_roles_lack(manager, demo_sim, settings):
    demo_sim.add_user("no-transfers", "secret", ALL_BUT_TRANSFERS)
    manager.username, manager.password = "no-transfers@internal", "secret"
    report = test_connection(manager)
    # SSH transfer can still back up with this user: a warning naming what cannot, not a refusal.
    assert report.ok, report.error
    step = report.steps[-1]
    assert (step.name, step.ok, step.warning) == ("permits", True, True)
    assert step.message.startswith("The roles of no-transfers@internal lack edit_disk_properties. Needed: ")
    # Each strategy the engine allows, and restore, with what it needs and what is missing.
    assert "Disk image transfer: manipulate_vm_snapshots, edit_disk_properties (missing: edit_disk_properties)" in (
        step.message
    )
    assert "SSH transfer: manipulate_vm_snapshots;" in step.message
    assert "Restore: create_disk, edit_disk_properties, import_export_vm, configure_vm_storage, delete_disk" in (
        step.message
    )
    # Disk attachment needs no image transfer either: snapshots, and disks attached to its proxy VM.
    assert "Backups can run with: Disk attachment (proxy VM), Export storage domain, SSH transfer." in step.message
    assert "Add the missing permits to the user's role on the engine" in step.message

    # A user no strategy can back up with is refused, naming what it lacks.
    demo_sim.add_user("reader", "secret", [])
    manager.username = "reader@internal"
    report = test_connection(manager)
    assert not report.ok and report.steps[-1].name == "permits"
    assert report.error.startswith("The roles of reader@internal lack backup_disk, edit_disk_properties, ")
    assert "No strategy can back up with them." in report.error
    manager.username = "no-transfers@internal"
    # A sync that fails is not blamed on permits the user needs for backups only.
    # A read is asked again five times (ENGINE_RETRY_DELAYS): the engine fails all six.
    assert len(settings.ENGINE_RETRY_DELAYS) == 5
    demo_sim.set_faults(fail_requests={"times": 6, "status": 500, "methods": ["GET"], "path": "/disks$"})
    try:
        with pytest.raises(JobError) as failed:
            sync_manager(manager)
    finally:
        demo_sim.clear_faults()
    assert "Internal Engine Error" in str(failed.value) and "lack" not in str(failed.value)


def test_it_names_the_host_too_old_for_change_block_tracking(manager, demo_sim, api_as):
    bigdata = VM.objects.get(manager=manager, name="bigdata01")  # in Development, whose host is host3
    db01 = VM.objects.get(manager=manager, name="db01")  # in Production, on host1
    assert CbtStrategy.unavailable_reason(bigdata) == ""
    demo_sim.set_host_versions("host3", vdsm="4.30.46-1.el7", libvirt="5.0.0-1.el7")
    try:
        sync_manager(manager)
        host3 = Host.objects.get(manager=manager, name="host3")
        assert (host3.vdsm_version, host3.libvirt_version) == ("4.30.46.0", "5.0.0.0")
        shown = api_as("viewer").get(f"/api/v1/hosts/{host3.pk}/").json()
        assert (shown["vdsm_version"], shown["libvirt_version"]) == ("4.30.46.0", "5.0.0.0")
        assert CbtStrategy.unavailable_reason(bigdata) == (
            "host host3 falls short: vdsm 4.30.46.0 is older than 4.40, libvirt 5.0.0.0 is older than 6.0; update it"
        )
        assert CbtStrategy.unavailable_reason(db01) == ""
        report = test_connection(manager)
    finally:
        demo_sim.set_host_versions("host3", vdsm="4.50.5.1-1.el9", libvirt="9.0.0-10.el9")
    assert report.ok, report.error  # other strategies and hosts do; the host is a warning
    (hosts,) = [s for s in report.steps if s.name == "hosts"]
    assert hosts.warning
    assert hosts.message == (
        "Change block tracking cannot back up VMs on host host3: vdsm 4.30.46.0 is older than 4.40, "
        "libvirt 5.0.0.0 is older than 6.0. Update those hosts."
    )
