"""File-level restore's pages, over a real backup of the demo's app01: "Browse files" on the backups
list, the session page (filesystems, folders, search, paging, downloads, put back, close), the
list of sessions; viewers get 403 everywhere."""

import html
import io
import os
import re
import tarfile

from django.urls import reverse

from core import roles
from inventory.models import VM, Manager
from jobs.models import Job
from jobs.runner import run_job
from policies.models import Policy
from recovery import file_views
from recovery.files import browse
from recovery.files import tree as trees
from recovery.models import FileSession
from repository.models import BackupPoint
from tests.recovery.files_helpers import DATA, DISK, HOSTNAME, audited, ext4_key, nothing_left


def open_from_the_list(client, point) -> FileSession:
    listing = client.get("/backups/").content.decode()
    assert f'action="/backups/{point.pk}/files/"' in listing and "Browse files" in listing
    response = client.post(f"/backups/{point.pk}/files/", {"next": "/backups/"})
    session = FileSession.objects.get(point=point, status=FileSession.Status.OPEN)
    assert response.status_code == 302 and response["Location"] == f"/files/{session.pk}/"
    return session


def test_it_browses_downloads_and_closes_a_backup_from_its_pages(client, users, app01_backup, files_dir, monkeypatch):
    client.force_login(users[roles.OPERATOR])
    session = open_from_the_list(client, app01_backup)
    url = f"/files/{session.pk}/"
    key = ext4_key(session)

    # "/": the disk's filesystems, sizes in IEC units; the disks as tabs; when it closes if unused.
    page = client.get(url, {"disk": DISK, "path": "/"}).content.decode()
    row = re.search(r'<tr class="filesystem">.*?</tr>', page, re.S).group(0)
    assert f">{key}</a>" in row and "<td>ext4</td><td>app01</td>" in row and "\xa0MiB" in row
    assert all(f">{d}_disk{n} <small>" in page for d, n in (("app01", 1), ("app01", 2), ("app01", 3)))
    assert "holds no partition table" in client.get(url, {"disk": "app01_disk2", "path": "/"}).content.decode()
    assert re.search(r'closes at <b id="closes-at">\d{4}-\d\d-\d\d \d\d:\d\d</b> if unused', page)

    # A folder: names (folders link deeper), size, modified, owner, mode; breadcrumbs.
    page = client.get(url, {"disk": DISK, "path": f"/{key}"}).content.decode()
    assert f'?disk={DISK}&amp;path=%2F{key}%2Fdata">data/</a>' in page
    page = client.get(url, {"disk": DISK, "path": f"/{key}/data"}).content.decode()
    rows = re.findall(r'<tr class="entry file">(.*?)</tr>', page, re.S)
    assert [re.search(r'<td class="name">(.*?)</td>', r).group(1) for r in rows] == sorted(DATA)
    assert "<td>256.0\xa0KiB</td>" in rows[0] and "<td>0:0</td>" in rows[0]
    assert '<td class="when"><code>-rw-r--r--</code></td>' in rows[0]
    assert re.search(r'<td class="when">\d{4}-\d\d-\d\d \d\d:\d\d</td>', rows[0])
    assert re.search(rf'<p class="crumbs" id="crumbs"><a href="[^"]*">/</a> .*>{key}</a> .*<b>data</b></p>', page)
    assert "Entries 1–4 of 4" in page
    assert "was made without a policy, so no guest SSH login is known to put files back into app01" in page

    # Downloads: a file as it is, a folder as a tar of its guest paths.
    link = re.search(r'<a href="([^"]*)" class="download">Download</a>', rows[1]).group(1).replace("&amp;", "&")
    got = client.get(link)
    assert got.status_code == 200 and b"".join(got.streaming_content) == DATA["file1.bin"]
    assert got["Content-Disposition"] == 'attachment; filename="file1.bin"' and got["Content-Length"] == "262144"
    got = client.get(f"{url}download/", {"disk": DISK, "path": f"/{key}/etc/hostname"})
    assert b"".join(got.streaming_content) == HOSTNAME
    got = client.get(f"{url}download/", {"disk": DISK, "path": f"/{key}/data"})
    assert got["Content-Disposition"] == 'attachment; filename="data.tar"' and "Content-Length" not in got
    with tarfile.open(fileobj=io.BytesIO(b"".join(got.streaming_content))) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()} == {
            f"data/{name}": data for name, data in DATA.items()
        }

    # Search by name, and paging (two entries a page here).
    page = client.get(url, {"disk": DISK, "path": f"/{key}/data", "q": "LE2"}).content.decode()
    assert re.findall(r'<td class="name">(.*?)</td>', page) == ["file2.bin"]
    monkeypatch.setattr(trees, "PER_PAGE", 2)
    page = client.get(url, {"disk": DISK, "path": f"/{key}/data", "page": 2}).content.decode()
    assert re.findall(r'<td class="name">(.*?)</td>', page) == ["file2.bin", "file3.bin"]
    assert "Entries 3–4 of 4" in page and ">First</a>" in page and ">Previous</a>" in page and ">Next<" not in page
    previous = html.unescape(re.search(r'<a href="([^"]+)"[^>]*>Previous</a>', page)[1])
    page = client.get(previous).content.decode()  # the link keeps the filesystem and the folder
    assert re.findall(r'<td class="name">(.*?)</td>', page) == ["file0.bin", "file1.bin"], previous
    searched = client.get(url, {"disk": DISK, "qpath": f"/{key}/data", "q": "LE3"}).content.decode()
    assert re.findall(r'<td class="name">(.*?)</td>', searched) == ["file3.bin"]  # the search form's folder
    monkeypatch.undo()

    # What is not there: 404 with the path, on the page; a page past the last, said.
    missing = client.get(url, {"disk": DISK, "path": f"/{key}/etc/nothing"})
    assert missing.status_code == 404 and "/etc/nothing does not exist on the whole disk" in missing.content.decode()
    missing = client.get(f"{url}download/", {"disk": DISK, "path": f"/{key}/nothing.txt"})
    assert missing.status_code == 404 and "/nothing.txt does not exist on the whole disk" in missing.content.decode()
    past = client.get(url, {"disk": DISK, "path": f"/{key}/data", "page": 9})
    assert past.status_code == 400 and "There is no page 9" in past.content.decode()

    # The list of sessions, then Close: back to the backups, nothing left on the node.
    page = client.get("/files/").content.decode()
    assert re.search(rf'<tr class="file-session open"><td><a href="{url}">{session.pk}</a></td>', page)
    response = client.post(f"{url}close/", {"next": "/backups/"}, follow=True)
    assert response.redirect_chain == [("/backups/", 302)]
    assert f"Browsing session {session.pk} closed" in response.content.decode()
    session.refresh_from_db()
    assert session.status == FileSession.Status.CLOSED and session.close_reason == "closed by operator-user"
    assert nothing_left(files_dir)
    page = client.get(url).content.decode()
    assert "is closed (closed by operator-user)" in page and f"Open backup #{app01_backup.pk} again" in page
    listed = client.get("/files/").content.decode()
    assert re.search(r'<tr class="file-session closed">.*closed by operator-user', listed, re.S)

    assert [(action, details.get("path")) for action, details in audited(actor=users[roles.OPERATOR])] == [
        ("files_session_opened", None),
        ("files_downloaded", f"/{key}/data/file1.bin"),
        ("files_downloaded", f"/{key}/etc/hostname"),
        ("files_downloaded", f"/{key}/data"),
        ("files_session_closed", None),
    ]
    assert audited(action="files_downloaded")[0][1] == {
        "session": session.pk,
        "disk": DISK,
        "path": f"/{key}/data/file1.bin",
        "guest_path": "/data/file1.bin",
    }

    # A backup that cannot be opened: said on the page the button was on, never a 500.
    BackupPoint.objects.filter(pk=app01_backup.pk).update(status=BackupPoint.Status.DAMAGED, damage="bad checksum")
    vm_page = reverse("vm-detail", args=[app01_backup.vm_id])
    response = client.post(f"/backups/{app01_backup.pk}/files/", {"next": vm_page}, follow=True)
    assert response.redirect_chain == [(vm_page, 302)]
    assert f"Backup {app01_backup.pk} is damaged (bad checksum)" in response.content.decode()
    response = client.post(f"/backups/{app01_backup.pk}/files/", {"next": "https://elsewhere.example/"})
    assert response["Location"] == "/backups/"


def test_it_puts_ticked_files_back_into_the_vm_from_the_session_page(client, users, app01_backup, sshd, tmp_path):
    client.force_login(users[roles.OPERATOR])
    vm = app01_backup.vm
    vm.guest_address = "127.0.0.1"
    vm.save()
    policy = Policy.objects.create(
        name="guest-ssh",
        destination=app01_backup.destination,
        guest_ssh_user=sshd["user"],
        guest_ssh_port=sshd["port"],
        guest_ssh_private_key=sshd["key"],
    )
    BackupPoint.objects.filter(pk=app01_backup.pk).update(policy=policy)
    session = open_from_the_list(client, app01_backup)
    key = ext4_key(session)
    here = f"/files/{session.pk}/?disk={DISK}&path=/{key}/etc"
    page = client.get(here).content.decode()
    assert 'placeholder="(empty: their original places)"' in page and "Put back into VM app01</button>" in page
    (value,) = re.findall(r'name="path" value="([^"]*hostname)"', page)
    target = tmp_path / "guest"

    # Nothing ticked: said on the session page.
    put = f"/files/{session.pk}/put/"
    response = client.post(put, {"disk": DISK, "next": here, "target": str(target)}, follow=True)
    assert response.redirect_chain == [(here, 302)]
    assert "Choose the files or folders to put back." in response.content.decode()

    response = client.post(
        f"/files/{session.pk}/put/", {"disk": DISK, "next": here, "path": [value], "target": str(target)}
    )
    job = Job.objects.get(kind="files_put_back")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.params["paths"] == [f"/{key}/etc/hostname"] and job.params["overwrite"] is False
    run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert (target / "hostname").read_bytes() == HOSTNAME
    ((_, details),) = audited(action="files_put_back")
    assert details == {
        "session": session.pk,
        "vm": "app01",
        "paths": [f"/{key}/etc/hostname"],
        "into": str(target),
        "overwrite": False,
        "job": job.pk,
    }
    client.post(f"/files/{session.pk}/close/")


def test_it_refuses_viewers_every_page_of_files(client, users, destination):
    manager = Manager.objects.create(name="m", api_url="https://m.example/ovirt-engine/api", username="admin@internal")
    vm = VM.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-000000000001", name="vm1")
    point = BackupPoint.objects.create(vm=vm, destination=destination, strategy="image_transfer", status="complete")
    session = FileSession.objects.create(point=point, node="n1", who="someone", status=FileSession.Status.CLOSED)
    client.force_login(users[roles.VIEWER])
    pages = client.get("/backups/").content.decode()
    assert "Browse files" not in pages and 'href="/files/"' not in pages
    for method, url in [
        ("post", f"/backups/{point.pk}/files/"),
        ("get", "/files/"),
        ("get", f"/files/{session.pk}/"),
        ("get", f"/files/{session.pk}/download/?path=/disk/etc/hostname"),
        ("post", f"/files/{session.pk}/put/"),
        ("post", f"/files/{session.pk}/close/"),
    ]:
        assert getattr(client, method)(url).status_code == 403, url
    assert not FileSession.objects.exclude(pk=session.pk).exists()
    session.refresh_from_db()
    assert session.status == FileSession.Status.CLOSED and not audited()


def test_it_keeps_guest_names_that_are_not_utf8_byte_for_byte_in_links(tmp_path, rf):
    """A Latin-1 name from an old guest: shown with U+FFFD, its link and form value carry its bytes,
    and the path read back from them opens the same file."""
    os.mkdir(bytes(tmp_path) + b"/root")
    with open(bytes(tmp_path) + b"/root/caf\xe9.txt", "wb") as f:
        f.write(b"latin-1\n")
    tree = trees.MountedTree(tmp_path / "root")
    (entry,) = trees.list_folder(tree, [], cache_key=("latin-1", str(tmp_path))).entries
    session = FileSession(pk=7)
    (row,) = file_views._rows(session, {"alias": "d1"}, "/disk", [entry])
    assert row["name"] == "caf\ufffd.txt" and row["value"] == "/disk/caf%E9.txt"
    assert row["download"] == "/files/7/download/?disk=d1&path=%2Fdisk%2Fcaf%E9.txt"
    path = file_views.query_path(rf.get(row["download"]))
    assert path == file_views.unquoted(row["value"]) == "/disk/caf\udce9.txt"
    assert b"".join(trees.stream_file(tree, trees.split_path(path)[1:])[1]) == b"latin-1\n"
    response = file_views.download_response(
        browse.Download("caf\udce9.txt", "application/octet-stream", 8, iter([b"latin-1\n"]), "/caf\udce9.txt")
    )
    assert response["Content-Disposition"] == "attachment; filename*=utf-8''caf%EF%BF%BD.txt"
