"""The engine client's snapshot steps against ovirtsim: the engine failing, or refusing while busy."""

import json
import threading

import ovirtsdk4.types as types
import pytest

from jobs.models import Job
from ovirt.errors import EngineError
from ovirt.snapshots import SNAPSHOT_PREFIX, create_snapshot, remove_snapshot
from ovirt.vms import remove_vm
from ovirtsim import Simulator
from tests.ovirtsim.helpers import add_disk, end_transfer, qemu_img, start_transfer
from tests.ovirtsim.test_data_plane import make_vm

MiB = 1024**2


def test_it_tells_a_failed_merge_instead_of_waiting_for_the_snapshot_to_go(tmp_path):
    """The engine unlocks a snapshot whose merge failed and keeps it: waiting for it to go would wait
    the whole hour the merge is given."""
    with Simulator(tmp_path / "engine", seed="empty") as sim:
        conn = sim.connect()
        try:
            disk = add_disk(conn, name="m_os", size=16 * MiB)
            vm = make_vm(conn, "m", disks=[disk])
            snap, _ = create_snapshot(conn, vm.id, description="merge fails", quiesce=False)
            (base,) = [
                p
                for p in (sim.state_dir / "storage").glob(f"*/images/{disk.id}/*")
                if p.suffix not in (".meta", ".lease")
                and "backing-filename" not in json.loads(qemu_img("info", "--output=json", str(p)).stdout)
            ]
            # Behind the engine's back the base now needs a volume that is not there: the merge, which
            # opens the whole chain, fails.
            qemu_img("rebase", "-u", "-f", "qcow2", "-b", "not-there", "-F", "qcow2", str(base))
            with pytest.raises(EngineError) as failure:
                remove_snapshot(conn, vm.id, snap.id)
            name = f"{SNAPSHOT_PREFIX}: merge fails"
            assert str(failure.value).startswith(
                f"The engine could not remove snapshot '{name}' ({snap.id}): Failed to delete snapshot '{name}' for VM "
            ), failure.value
            assert "The snapshot is still there. Disk m_os is illegal now" in str(failure.value)
            snapshots = conn.system_service().vms_service().vm_service(vm.id).snapshots_service()
            assert snapshots.snapshot_service(snap.id).get().snapshot_status == types.SnapshotStatus.OK
        finally:
            conn.close()


@pytest.mark.django_db
def test_it_retries_what_the_engine_refuses_while_busy_and_not_what_waiting_cannot_cure(tmp_path):
    """A locked disk is waited out; a running VM is not (it used to cost half a minute of retries
    told as "the engine answered busy"). The VMs' names hold words of lasting refusals: the
    engine's messages name them, and must not be taken for the reason."""
    with Simulator(tmp_path / "engine", seed="empty") as sim:
        conn = sim.connect()
        try:
            job = Job.objects.create(kind=Job.Kind.BACKUP, name="freezer")
            running = make_vm(conn, "freezer", disks=[add_disk(conn, name="freezer_os", size=16 * MiB)], status="up")
            with pytest.raises(EngineError, match="is running"):
                remove_vm(conn, running.id, name="freezer", job=job)
            assert not job.events.filter(message__contains="retrying").exists()

            disk = add_disk(conn, name="illegal-running_os", size=16 * MiB)
            down = make_vm(conn, "illegal-running", disks=[disk])
            # The disk is locked by an image transfer until a moment after the first refusal.
            transfer = start_transfer(conn, disk_id=disk.id)

            def cancel() -> None:
                own = sim.connect()  # a connection is not shared between threads
                try:
                    end_transfer(own, transfer, cancel=True)
                finally:
                    own.close()

            release = threading.Timer(1.5, cancel)
            release.start()
            try:
                remove_vm(conn, down.id, name="illegal-running", job=job)
            finally:
                release.join()
            busy = job.events.filter(message__contains="the engine answered busy")
            assert busy.exists() and "is locked" in busy.first().message
            assert conn.system_service().vms_service().list(search="name=illegal-running") == []
        finally:
            conn.close()
