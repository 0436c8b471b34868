"""Destinations: a path that cannot hold backups is refused; the space is reported."""

import os

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
