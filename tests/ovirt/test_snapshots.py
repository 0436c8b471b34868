"""The engine client's snapshot steps against ovirtsim: the engine failing, or refusing while busy."""

import json

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from jobs.models import Job
from ovirt.errors import EngineError
from ovirt.snapshots import create_snapshot, remove_snapshot
from ovirt.vms import remove_vm
from ovirtsim import Simulator
from tests.ovirtsim.helpers import add_disk, qemu_img
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
            assert f"The engine could not remove snapshot {snap.id}: Failed to delete snapshot" in str(failure.value)
            assert "The snapshot is still there. It left disk m_os illegal" in str(failure.value)
            snapshots = conn.system_service().vms_service().vm_service(vm.id).snapshots_service()
            assert snapshots.snapshot_service(snap.id).get().snapshot_status == types.SnapshotStatus.OK
        finally:
            conn.close()


@pytest.mark.django_db
def test_it_retries_what_the_engine_refuses_while_busy_and_not_what_waiting_cannot_cure(tmp_path):
    """A snapshot under way is waited out; a running VM is not (it used to cost half a minute of
    retries told as "the engine answered busy")."""
    with Simulator(tmp_path / "engine", seed="empty") as sim:
        conn = sim.connect()
        try:
            job = Job.objects.create(kind=Job.Kind.BACKUP, name="m")
            disk = add_disk(conn, name="m_os", size=16 * MiB)
            vm = make_vm(conn, "m", disks=[disk], status="up")
            with pytest.raises(sdk.Error, match="is running"):
                remove_vm(conn, vm.id, name="m", job=job)
            assert not job.events.filter(message__contains="retrying").exists()

            snapshots = conn.system_service().vms_service().vm_service(vm.id).snapshots_service()
            snapshots.add(types.Snapshot(description="under way", persist_memorystate=False))
            # The engine refuses a second snapshot while the first is made; the second comes after it.
            snap, _ = create_snapshot(conn, vm.id, description="second", quiesce=False, job=job)
            assert job.events.filter(message__contains="the engine answered busy").exists()
            assert snapshots.snapshot_service(snap.id).get().snapshot_status == types.SnapshotStatus.OK
        finally:
            conn.close()
