"""Destinations: a path that cannot hold backups is refused; the space is reported."""

import os

import pytest
from django.urls import reverse

from core import roles
from repository.models import BackupDestination


def error_fields(response) -> dict:
    body = response.json()["error"]
    assert body["status"] == 400
    return body["fields"]


def test_it_refuses_a_destination_that_is_not_writable(api_as, tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    (tmp_path / "file").write_text("x")
    (tmp_path / "escape").symlink_to("/etc")
    cases = {
        "relative/path": "must be absolute",
        str(tmp_path / "missing"): "does not exist: create it (or mount the share) first",
        str(tmp_path / "file"): "is not a directory",
        "/": "is not under an allowed backup root",
        "/etc": "is not under an allowed backup root",
        "/root/.ssh": "is not under an allowed backup root",
        str(tmp_path / ".." / ".." / ".." / "etc"): "is not under an allowed backup root",
        str(tmp_path / "escape"): "(it resolves to /etc) is not under an allowed backup root",
    }
    if os.geteuid() != 0:  # root writes anywhere
        cases[str(readonly)] = "not writable"
    for path, message in cases.items():
        response = api_as(roles.ADMIN).post(
            reverse("api:destination-list"), {"name": "d", "kind": "filesystem", "path": path}, format="json"
        )
        assert response.status_code == 400, path
        assert message in error_fields(response)["path"][0], (path, response.json())
    assert not BackupDestination.objects.exists()
    assert not (tmp_path / "missing").exists(), "validation creates nothing"


def test_it_creates_a_destination_and_reports_its_space(api_as, tmp_path):
    (tmp_path / "new").mkdir()
    response = api_as(roles.ADMIN).post(
        reverse("api:destination-list"),
        {"name": "d", "kind": "filesystem", "path": str(tmp_path / "new")},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["capacity_bytes"] > 0 and 0 < body["free_bytes"] <= body["capacity_bytes"]
    assert (tmp_path / "new").is_dir()


@pytest.fixture
def roots(settings, tmp_path):
    """BACKUP_ROOTS is one directory of this test; tmp_path/outside is out of it."""
    inside = tmp_path / "roots"
    inside.mkdir()
    (tmp_path / "outside").mkdir()
    settings.BACKUP_ROOTS = [str(inside)]
    return inside


def test_it_takes_one_destination_per_real_directory_however_the_path_is_written(api_as, client, users, roots):
    (roots / "nas").mkdir()
    (roots / "other").mkdir()
    (roots / "alias").symlink_to(roots / "nas")
    api = api_as(roles.ADMIN)
    created = api.post(
        reverse("api:destination-list"),
        {"name": "nas", "kind": "filesystem", "path": str(roots / "nas")},
        format="json",
    )
    assert created.status_code == 201, created.json()
    spellings = [
        f"{roots}/nas/",
        f"{roots}//nas",
        f"/{roots}/nas",
        f"{roots}/nas/../nas",
        f"{roots}/./nas",
        f"{roots}/alias",
    ]
    client.force_login(users[roles.ADMIN])
    for i, path in enumerate(spellings):
        response = api.post(
            reverse("api:destination-list"), {"name": f"n{i}", "kind": "filesystem", "path": path}, format="json"
        )
        assert response.status_code == 400, path
        (message,) = error_fields(response)["path"]
        assert message.startswith("This is the directory of destination nas ("), message
        assert message.endswith(": one destination per directory. Use that destination, or another directory.")
        page = client.post(reverse("destination-new"), {"name": f"n{i}", "kind": "filesystem", "path": path})
        assert page.status_code == 200, path
        assert page.context["form"].errors["path"] == [message]
    assert list(BackupDestination.objects.values_list("name", flat=True)) == ["nas"]
    other = api.post(
        reverse("api:destination-list"),
        {"name": "other", "kind": "filesystem", "path": str(roots / "other")},
        format="json",
    ).json()
    moved = api.patch(reverse("api:destination-detail", args=[other["id"]]), {"path": f"{roots}/nas/"}, format="json")
    assert moved.status_code == 400 and "destination nas" in error_fields(moved)["path"][0]
    nas = BackupDestination.objects.get(name="nas")
    kept = api.patch(reverse("api:destination-detail", args=[nas.pk]), {"enabled": False}, format="json")
    assert kept.status_code == 200, kept.json()  # its own directory is no conflict
    page = client.post(
        reverse("destination-edit", args=[nas.pk]), {"name": "nas", "kind": "filesystem", "path": f"{roots}/nas/"}
    )
    assert page.status_code == 302


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_back_up_through_a_destination_swapped_for_a_link_after_it_was_saved(
    manager, api_as, roots, tmp_path
):
    from core.errors import OperatorError
    from inventory.models import VM
    from jobs.models import Job
    from repository.writer import PointWriter
    from tests.helpers import backup

    nas, outside, other = roots / "nas", tmp_path / "outside", roots / "other"
    nas.mkdir()
    other.mkdir()
    response = api_as(roles.ADMIN).post(
        reverse("api:destination-list"), {"name": "nas", "kind": "filesystem", "path": str(nas)}, format="json"
    )
    destination = BackupDestination.objects.get(pk=response.json()["id"])
    vm = VM.objects.get(manager=manager, name="test01")
    nas.rename(roots / "nas.old")
    for target in (outside, other):  # out of BACKUP_ROOTS, or just another directory than the one saved
        nas.symlink_to(target)
        job = backup(vm, destination, type="full")
        assert job.status == Job.Status.FAILED
        assert job.error == (
            f"The destination nas's directory {nas} is now a link to {target}: refused; fix the directory or "
            "the destination."
        )
        with pytest.raises(OperatorError, match="is now a link to"):
            PointWriter.start(vm=vm, destination=destination, strategy="image_transfer", needed_bytes=0)
        assert list(target.iterdir()) == []
        nas.unlink()
    assert not vm.backup_points.exists()


@pytest.mark.django_db(transaction=True)
def test_it_reads_no_backup_through_a_destination_swapped_for_a_link(manager, api_as, roots, tmp_path):
    from inventory.models import VM
    from jobs.models import Job
    from repository.models import BackupPoint
    from tests.helpers import backup, restore
    from tests.repository.test_verify import verify

    nas, elsewhere = roots / "nas", roots / "elsewhere"
    nas.mkdir()
    elsewhere.mkdir()
    destination = BackupDestination.objects.create(name="nas", path=str(nas))
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    nas.rename(roots / "nas.old")
    nas.symlink_to(elsewhere)
    refused = (
        f"The destination nas's directory {nas} is now a link to {elsewhere}: refused; fix the directory or "
        "the destination."
    )
    (roots / "local").mkdir()
    local = BackupDestination.objects.create(name="local", path=str(roots / "local"))
    other = BackupPoint.objects.get(pk=backup(vm, local, type="full").result["point"])
    checked = verify([point, other])  # the destination out of reach stops the verify of no other
    assert checked.status == Job.Status.FAILED
    assert checked.error == (
        f"1 of 2 backup(s) could not be verified, their destination out of reach (backup {point.pk}: {refused}); "
        "the others are sound."
    )
    point.refresh_from_db()
    other.refresh_from_db()
    assert point.status == "complete" and point.verified is None  # out of reach is not damaged
    assert other.status == "complete" and other.verified is not None
    restored = restore(point, "test01-restored")
    assert (restored.status, restored.error) == (Job.Status.FAILED, refused)
    deleted = api_as(roles.ADMIN).delete(reverse("api:backup-detail", args=[point.pk]))
    assert deleted.status_code == 409 and deleted.json()["error"]["message"] == refused
    assert BackupPoint.objects.filter(pk=point.pk, status="complete").exists()
    assert list(elsewhere.iterdir()) == []
    assert (roots / "nas.old" / str(vm.engine_id) / str(point.uuid) / "manifest.json").is_file()


@pytest.mark.django_db(transaction=True)
def test_it_keeps_destinations_that_shared_a_directory_before_the_upgrade(roots):
    """The upgrade records each destination's real directory and deletes nothing; the rule applies to
    destinations made or moved afterwards."""
    from django.core.exceptions import ValidationError
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    (roots / "nas").mkdir()
    before = [("repository", "0004_point_verification")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps.get_model("repository", "BackupDestination")
    for name, path in (("nas", f"{roots}/nas"), ("nas-slash", f"{roots}/nas/"), ("nas-dots", f"{roots}//nas/../nas")):
        old.objects.create(name=name, path=path)
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    rows = BackupDestination.objects.order_by("pk").values_list("name", "real_path", "shared_before_check")
    assert list(rows) == [
        ("nas", f"{roots}/nas", False),
        ("nas-slash", f"{roots}/nas", True),
        ("nas-dots", f"{roots}/nas", True),
    ]
    kept = BackupDestination.objects.get(name="nas-slash")
    kept.enabled = False
    kept.full_clean()  # unchanged directory: still allowed
    kept.save()
    assert BackupDestination.objects.get(name="nas-slash").checked_path() == roots / "nas"
    with pytest.raises(ValidationError, match="This is the directory of destination nas:"):
        BackupDestination(name="again", path=f"{roots}/nas").full_clean()
