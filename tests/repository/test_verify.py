"""The verify job: every file of a point against its manifest, its QCOW2 image, its chain."""

import os
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from core import roles
from inventory.models import VM
from jobs.models import Job
from jobs.runner import run_job
from recovery.restore import request_restore
from repository.models import BackupPoint
from repository.verify import request_verify
from tests.helpers import backup, restore
from tests.recovery.test_integrity import flip_bytes


def verify(points=None) -> Job:
    job = request_verify(origin="cli", points=points)
    run_job(job.pk)
    job.refresh_from_db()
    return job


@pytest.mark.django_db(transaction=True)  # the job is enqueued on commit, so --wait sees it run
def test_it_finds_a_flipped_byte_keeps_the_point_and_builds_no_chain_on_it(manager, destination, demo_sim, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "sync": True}
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    sound = verify([point])
    assert sound.status == Job.Status.SUCCEEDED, sound.error
    point.refresh_from_db()
    assert point.status == "complete" and point.verified is not None

    (entry,) = point.manifest().disks
    image = point.directory.path / entry.file
    flip_bytes(image)
    with pytest.raises(CommandError) as failed:
        call_command("verify", str(point.pk), "--wait")
    assert f"{image} does not match its checksum: expected {entry.checksum}, found blake3:" in str(failed.value)
    point.refresh_from_db()
    assert point.status == "damaged" and str(image) in point.damage
    assert image.exists(), "a damaged point is kept, never deleted silently"
    with pytest.raises(ValueError, match=f"Backup {point.pk} is damaged"):
        request_restore(point=point, origin="cli", name="from-damaged")

    after = backup(vm, destination, type="incremental")
    new = BackupPoint.objects.get(pk=after.result["point"])
    assert new.type == "full" and f"backup {point.pk} is damaged" in new.note

    flip_bytes(image)  # flipped back: the file is sound again
    assert verify([point]).status == Job.Status.SUCCEEDED
    point.refresh_from_db()
    assert (point.status, point.damage) == ("complete", "")


def test_it_finds_a_missing_file_and_a_broken_chain(manager, destination, demo_sim):
    vm = VM.objects.get(manager=manager, name="test01")
    full = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    demo_sim.guest_write(str(vm.engine_id), 0, os.urandom(1024 * 1024))
    incremental = BackupPoint.objects.get(pk=backup(vm, destination, type="incremental").result["point"])
    (entry,) = full.manifest().disks
    (full.directory.path / entry.file).unlink()

    job = verify()

    assert job.status == Job.Status.FAILED and job.error.startswith("2 of 2 backup(s) damaged")
    for point in (full, incremental):
        point.refresh_from_db()
        assert point.status == "damaged"
    assert f"{full.directory.path / entry.file} is missing." in full.damage
    # The incremental is read through the full: its damage names the full's missing file.
    assert Path(entry.file).name in incremental.damage and "No such file" in incremental.damage


def test_it_verifies_through_the_api_and_the_page(manager, destination, demo_sim, api_as, client, users):
    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    response = api_as(roles.OPERATOR).post(reverse("api:backup-verify", kwargs={"pk": point.pk}))
    assert response.status_code == 202
    assert Job.objects.get(pk=response.json()["job"]).params == {"points": [point.pk], "local_to": ""}
    assert api_as(roles.VIEWER).post(reverse("api:backup-verify", kwargs={"pk": point.pk})).status_code == 403
    response = api_as(roles.OPERATOR).post(reverse("api:backup-verify-all"))
    assert Job.objects.get(pk=response.json()["job"]).params == {"points": None, "local_to": ""}

    client.force_login(users[roles.OPERATOR])
    page = client.get(reverse("point-list"))
    assert reverse("point-verify", kwargs={"pk": point.pk}).encode() in page.content
    response = client.post(reverse("point-verify", kwargs={"pk": point.pk}))
    assert response.status_code == 302 and response["Location"].startswith("/jobs/")


def test_it_warns_of_an_ovf_written_before_it_was_checksummed_and_still_restores_it(manager, destination, demo_sim):

    vm = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(vm, destination, type="full").result["point"])
    # As an older version left it: no OVF checksum in the manifest or the row.
    manifest = point.manifest()
    manifest.ovf_checksum = None
    manifest.write(point.directory.path)
    BackupPoint.objects.filter(pk=point.pk).update(ovf_checksum="")
    said = f"{point.directory.path / 'vm.ovf'}: OVF not checksummed (written by an older version)"

    job = verify([point])

    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.events.filter(level="warning", message__contains=said).exists()
    restored = restore(point, "test01-older")
    assert restored.status == Job.Status.SUCCEEDED, restored.error
    assert restored.events.filter(level="warning", message__contains=said).exists()
