"""What every benchmark starts from: a throwaway DATA_DIR with a migrated SQLite database."""

import atexit
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def open_workspace(prefix: str, *, database_url: str = "") -> Path:
    """A temporary directory (removed at exit: benches write gigabytes of images) that Django
    runs in, on SQLite whatever DATABASE_URL says, or on the `database_url` given (emptied first)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    sys.path.insert(0, str(ROOT))
    # Destinations are checked against BACKUP_ROOTS at every use: a bench's live in the temporary directory.
    os.environ.update(
        DATA_DIR=str(work / "data"), DJANGO_SETTINGS_MODULE="backupsite.settings", BACKUP_ROOTS=tempfile.gettempdir()
    )
    os.environ.pop("DATABASE_URL", None)
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    import django
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    # A throwaway site's keys, in the environment: the settings read them, nothing is written.
    os.environ.setdefault("SECRET_KEY", Fernet.generate_key().decode() * 2)
    os.environ.setdefault("CREDENTIALS_KEY", Fernet.generate_key().decode())
    django.setup()
    call_command("init_secrets")  # creates DATA_DIR; the keys come from the environment
    call_command("migrate", verbosity=0)
    if database_url:
        call_command("flush", interactive=False, verbosity=0)
    return work


@contextmanager
def demo_vm(work: Path, name: str = "bigdata01"):
    """The demo engine running in `work`, registered and synced, a destination in `work/repo`, and
    the VM `name`: yields (simulator, VM row, destination)."""
    from inventory.models import VM, Manager
    from inventory.sync import sync_manager
    from ovirtsim import Simulator
    from repository.models import BackupDestination

    with Simulator(work / "engine", seed="demo") as sim:
        manager = Manager.objects.create(name="bench", **sim.manager_fields)
        sync_manager(manager)
        (work / "repo").mkdir()
        destination = BackupDestination.objects.create(name="repo", path=str(work / "repo"))
        yield sim, VM.objects.get(manager=manager, name=name), destination


def run_or_exit(job):
    """Run a job here and now; a failure ends the benchmark with its error."""
    from jobs.models import Job
    from jobs.runner import run_job

    run_job(job.pk)
    job.refresh_from_db()
    if job.status != Job.Status.SUCCEEDED:
        raise SystemExit(f"{job.kind} failed: {job.error}")
    return job


def volume_file(sim, work: Path, disk) -> Path:
    """The file of the disk's active volume on the demo engine's file domain, by the volume id the
    engine names (`image_id`), never by listing the image's directory: vdsm keeps each volume's
    `.meta` (and `.lease`) beside it, and a listing's order is the filesystem's. Asked once the
    engine is done with the disk: a snapshot a backup removed merges after the job ends, and
    qemu-img may not open a chain a merge is writing."""
    import ovirtsdk4.types as types

    from tests.ovirtsim.helpers import wait_for

    with sim.connect() as conn:
        disk_service = conn.system_service().disks_service().disk_service(str(disk.engine_id))
        snapshots = conn.system_service().vms_service().vm_service(str(disk.vm.engine_id)).snapshots_service()
        wait_for(
            lambda: (
                disk_service.get().status == types.DiskStatus.OK
                and all(s.snapshot_status == types.SnapshotStatus.OK for s in snapshots.list())
            ),
            timeout=300,
            what=f"the engine to be done with disk {disk.name}",
        )
        engine_disk = disk_service.get()
    path = work / "engine" / "storage" / engine_disk.storage_domains[0].id / "images" / engine_disk.id
    path /= engine_disk.image_id
    if not path.is_file():
        raise SystemExit(f"The engine names volume {engine_disk.image_id} of {disk.name}, but {path} is no file.")
    return path
