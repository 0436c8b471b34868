"""File-level restore through the API, over a real backup of the demo's app01: open, list, read,
download, page, search, put back, close; errors in the one error body; operators only."""

import io
import tarfile

from core import roles
from inventory.models import VM, Manager
from jobs.models import Job
from recovery.models import FileSession
from repository.models import BackupPoint
from tests.recovery.files_helpers import DATA, DISK, HOSTNAME, audited, ext4_key, nothing_left


def test_it_opens_browses_downloads_and_closes_a_backup(api_as, users, app01_backup, files_dir):
    api = api_as(roles.OPERATOR)
    opened = api.post(f"/api/v1/backups/{app01_backup.pk}/files/")
    assert opened.status_code == 201, opened.content
    body = opened.json()
    session = FileSession.objects.get(pk=body["id"])
    assert body["status"] == "open" and body["point"] == app01_backup.pk and body["vm"] == "app01"
    assert [d["alias"] for d in body["disks"]] == ["app01_disk1", "app01_disk2", "app01_disk3"]
    (fs,) = [f for f in body["disks"][0]["filesystems"] if f["type"] == "ext4"]
    assert fs["label"] == "app01" and 0 < fs["used"] < fs["bytes"] and fs["problem"] == ""
    assert "mount" not in fs and "offset" not in fs, "the node's own paths are not shown"
    key = ext4_key(session)
    assert fs["key"] == key

    url = f"/api/v1/file-sessions/{session.pk}/"
    assert [s["id"] for s in api.get("/api/v1/file-sessions/").json()["results"]] == [session.pk]
    assert api.get(url).json()["closes_at"] > body["opened"]

    def ls(**params):
        return api.get(f"{url}ls/", {"disk": DISK, **params})

    root = ls(path="/").json()
    assert root["entries"] == [] and [f["key"] for f in root["filesystems"]] == [key]
    assert ls(path="/", disk="app01_disk2").json()["error"]["message"].startswith("Disk app01_disk2 holds no")
    data = ls(path=f"/{key}/data").json()
    assert (data["path"], data["total"], data["page"], data["pages"]) == (f"/{key}/data", 4, 1, 1)
    first = data["entries"][0]
    assert first | {"mtime": None} == {
        "name": "file0.bin",
        "kind": "file",
        "size": 256 * 1024,
        "mtime": None,
        "mode": 0o644,
        "mode_text": "-rw-r--r--",
        "uid": 0,
        "gid": 0,
        "target": "",
    }
    assert first["mtime"].endswith("Z") or "+" in first["mtime"]
    assert [e["name"] for e in ls(path=f"/{key}/data", search="LE3").json()["entries"]] == ["file3.bin"]
    paged = ls(path=f"/{key}/data", per_page=2, page=2).json()
    assert [e["name"] for e in paged["entries"]] == ["file2.bin", "file3.bin"]
    assert (paged["total"], paged["page"], paged["pages"]) == (4, 2, 2)
    assert ls(path=f"/{key}/data", per_page=2, page=3).json()["error"]["message"] == (
        "There is no page 3: the folder's listing has 2."
    )
    assert ls(path=f"/{key}/data", per_page=5000).status_code == 400

    # A missing path: 404 with the path in the message.
    missing = ls(path=f"/{key}/etc/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "status": 404,
        "code": "not_found",
        "message": f"/etc/nothing does not exist on the whole disk (no partition table) (/{key}) of disk {DISK}.",
        "fields": {},
    }

    got = api.get(f"{url}download/", {"disk": DISK, "path": f"/{key}/etc/hostname"})
    assert got.status_code == 200 and b"".join(got.streaming_content) == HOSTNAME
    assert got["Content-Length"] == "6" and got["Content-Disposition"] == 'attachment; filename="hostname"'
    got = api.get(f"{url}download/", {"disk": DISK, "path": f"/{key}/data"})
    assert got["Content-Type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(b"".join(got.streaming_content))) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()} == {
            f"data/{name}": content for name, content in DATA.items()
        }
    assert api.get(f"{url}download/", {"disk": DISK, "path": f"/{key}/nothing"}).status_code == 404

    # Put back: refused in words (this backup was made without a policy, so no guest login is known).
    refused = api.post(f"{url}put/", {"disk": DISK, "paths": [f"/{key}/etc/hostname"]}, format="json")
    assert refused.status_code == 400 and "made without a policy" in refused.json()["error"]["message"]
    assert api.post(f"{url}put/", {"paths": []}, format="json").json()["error"]["fields"]["paths"]
    unknown = api.post(f"{url}put/", {"paths": [f"/{key}/etc"], "vm": "nope"}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"]["message"].endswith("has no VM nope.")

    assert api.delete(url).status_code == 204
    session.refresh_from_db()
    assert session.status == FileSession.Status.CLOSED and session.close_reason == "closed by operator-user"
    assert nothing_left(files_dir)
    assert api.delete(url).status_code == 204  # closed already: nothing to do
    closed = ls(path="/").json()["error"]["message"]
    assert closed == f"Browsing session {session.pk} is closed: closed by operator-user. Open the backup again."

    assert [(action, details.get("guest_path")) for action, details in audited()] == [
        ("files_session_opened", None),
        ("files_downloaded", "/etc/hostname"),
        ("files_downloaded", "/data"),
        ("files_session_closed", None),
    ]
    assert audited(source="api")[1][1] == {
        "session": session.pk,
        "disk": DISK,
        "path": f"/{key}/etc/hostname",
        "guest_path": "/etc/hostname",
    }


def test_it_refuses_a_damaged_backup_with_what_verify_found(api_as, app01_backup):
    BackupPoint.objects.filter(pk=app01_backup.pk).update(status=BackupPoint.Status.DAMAGED, damage="bad checksum")
    response = api_as(roles.OPERATOR).post(f"/api/v1/backups/{app01_backup.pk}/files/")
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(f"Backup {app01_backup.pk} is damaged (bad checksum)")
    assert not FileSession.objects.exists() and not audited()


def test_it_refuses_viewers_every_file_endpoint(api_as, destination):
    manager = Manager.objects.create(name="m", api_url="https://m.example/ovirt-engine/api", username="admin@internal")
    vm = VM.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-000000000001", name="vm1")
    point = BackupPoint.objects.create(vm=vm, destination=destination, strategy="image_transfer", status="complete")
    session = FileSession.objects.create(point=point, node="n1", who="someone", status=FileSession.Status.OPEN)
    url = f"/api/v1/file-sessions/{session.pk}/"
    calls = [
        ("post", f"/api/v1/backups/{point.pk}/files/"),
        ("get", "/api/v1/file-sessions/"),
        ("get", url),
        ("get", f"{url}ls/?path=/"),
        ("get", f"{url}download/?path=/disk/etc/hostname"),
        ("post", f"{url}put/"),
        ("delete", url),
    ]
    for role, expected in ((roles.VIEWER, 403), (None, 403), ("anonymous", 401)):
        api = api_as(role)
        for method, path in calls:
            assert getattr(api, method)(path).status_code == expected, (role, method, path)
    session.refresh_from_db()
    assert session.status == FileSession.Status.OPEN and not Job.objects.exists() and not audited()
