"""A point written back into an export domain, in the layout the engine reads there: an administrator
imports it as the engine's UI does (the same API call), or the restore imports it when asked; a copy
the domain holds already is replaced only when asked."""

import io
import os

import ovirtsdk4.types as types
import pytest
from django.core.management import call_command

from inventory.models import VM
from jobs.models import Job
from jobs.runner import run_job
from repository.models import BackupPoint
from tests.helpers import backup, disks_of, restore_disks
from tests.ovirtsim.helpers import download, identical, wait_for

pytestmark = [pytest.mark.django_db]


def test_it_writes_a_point_into_the_export_domain_for_the_engine_to_import(
    manager, destination, demo_sim, settings, tmp_path
):
    settings.EXPORT_STAGING_DIR = demo_sim.state_dir / "exports"
    app01 = VM.objects.get(manager=manager, name="app01")  # three disks: QCOW2 on NFS and iSCSI, RAW on NFS
    point = BackupPoint.objects.get(pk=backup(app01, destination, type="full").result["point"])
    files = {e.alias: point.directory.path / e.file for e in point.manifest().disks}
    vm_id = str(app01.engine_id)
    out = io.StringIO()
    call_command("restore", str(point.pk), "--to-export-domain", stdout=out)
    job = Job.objects.get(pk=int(out.getvalue().split()[0]))
    run_job(job.pk)
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    with demo_sim.connect() as conn:
        sds = conn.system_service().storage_domains_service()
        (sd,) = sds.list(search="name=export1")
        exported = sds.storage_domain_service(sd.id).vms_service()
        imported_id = None
        try:
            # The engine lists it from the OVF, with its disks, under the VM's own ids.
            (listed,) = [v for v in exported.list() if v.id == vm_id]
            assert listed.name == "app01"
            root = settings.EXPORT_STAGING_DIR / "Default" / sd.id
            for entry in point.manifest().disks:
                image = root / "images" / entry.disk_id
                (volume,) = [p for p in image.iterdir() if not p.name.endswith(".meta")]
                assert identical(files[entry.alias], volume), entry.alias
                if os.geteuid() == 0:
                    assert (volume.stat().st_uid, volume.stat().st_gid) == (36, 36)
            said = list(job.events.values_list("message", flat=True))
            assert any(m.endswith("import it from the domain's VM Import tab") for m in said), said

            # Not twice unless asked.
            again = restore_disks(point, export_domain=True)
            assert again.status == Job.Status.FAILED
            assert again.error.startswith("Export domain export1 holds a copy of VM app01 already"), again.error

            # Imported as the engine's UI imports it (a clone: app01 itself still exists): its disks hold
            # what the point holds.
            exported.vm_service(vm_id).import_(
                storage_domain=types.StorageDomain(name="data-nfs"),
                cluster=types.Cluster(name="Development"),
                clone=True,
                vm=types.Vm(name="app01-from-export"),
                query={"collapse_snapshots": "true"},
            )
            vms = conn.system_service().vms_service()

            def imported():
                found = vms.list(search="name=app01-from-export")
                return found[0] if found and found[0].status == types.VmStatus.DOWN else None

            imported_id = wait_for(imported, what="the import").id
            restored = disks_of(conn, imported_id)
            assert len(restored) == 3
            for disk in restored.values():
                original = next(a for a in files if disk.alias.startswith(a))
                copy = tmp_path / f"{disk.alias}.raw"
                download(conn, demo_sim.ca_file, copy, disk_id=disk.id, fmt="raw", out_fmt="raw")
                assert identical(files[original], copy), disk.alias
        finally:
            if imported_id:
                conn.system_service().vms_service().vm_service(imported_id).remove()
            exported.vm_service(vm_id).remove()


def test_it_imports_what_it_wrote_when_asked_and_replaces_a_copy_only_when_asked(
    manager, destination, demo_sim, settings, tmp_path
):
    settings.EXPORT_STAGING_DIR = demo_sim.state_dir / "exports"
    test01 = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(test01, destination, type="full").result["point"])
    vm_id = str(test01.engine_id)
    with demo_sim.connect() as conn:
        sds = conn.system_service().storage_domains_service()
        (sd,) = sds.list(search="name=export1")
        exported = sds.storage_domain_service(sd.id).vms_service()
        conn.system_service().vms_service().vm_service(vm_id).export(
            storage_domain=types.StorageDomain(id=sd.id), exclusive=True
        )
        vms = conn.system_service().vms_service()
        wait_for(lambda: vms.vm_service(vm_id).get().status == types.VmStatus.DOWN, what="the export")
        new_id = None
        try:
            job = restore_disks(
                point,
                export_domain=True,
                replace=True,
                import_vm=True,
                name="test01-imported",
                cluster="Development",
                storage_domain="data-nfs",
            )
            assert job.status == Job.Status.SUCCEEDED, job.error
            messages = list(job.events.values_list("message", flat=True))
            assert "Replaced the copy of VM test01 export domain export1 held, as asked" in messages
            new_id = job.result["vm_id"]
            assert vms.vm_service(new_id).get().name == "test01-imported"
            (entry,) = point.manifest().disks
            (disk,) = disks_of(conn, new_id).values()
            copy = tmp_path / "imported.raw"
            download(conn, demo_sim.ca_file, copy, disk_id=disk.id, fmt="raw", out_fmt="raw")
            assert identical(point.directory.path / entry.file, copy)
        finally:
            if new_id:
                vms.vm_service(new_id).remove()
            exported.vm_service(vm_id).remove()


def test_it_writes_nothing_into_the_export_domain_from_a_damaged_point(manager, destination, demo_sim, settings):
    settings.EXPORT_STAGING_DIR = demo_sim.state_dir / "exports"
    test01 = VM.objects.get(manager=manager, name="test01")
    point = BackupPoint.objects.get(pk=backup(test01, destination, type="full").result["point"])
    (entry,) = point.manifest().disks
    stored = point.directory.path / entry.file
    with open(stored, "r+b") as f:  # a bit flipped on the destination after the backup
        f.seek(os.path.getsize(stored) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x01]))
    job = restore_disks(point, export_domain=True)
    assert job.status == Job.Status.FAILED
    assert job.error.startswith("The backup is damaged:"), job.error
    with demo_sim.connect() as conn:
        sds = conn.system_service().storage_domains_service()
        (sd,) = sds.list(search="name=export1")
        assert str(test01.engine_id) not in {v.id for v in sds.storage_domain_service(sd.id).vms_service().list()}
    images = settings.EXPORT_STAGING_DIR / "Default" / sd.id / "images"
    assert [p.name for p in images.iterdir() if p.name.startswith(".restore-")] == []
