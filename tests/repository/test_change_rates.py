from datetime import timedelta

import pytest
from django.utils import timezone

from inventory.models import VM
from repository.change_rates import change_history
from repository.models import BackupPoint
from tests.estate import build_estate

pytestmark = pytest.mark.django_db


def make_point(vm, destination, **fields):
    fields.setdefault("status", BackupPoint.Status.COMPLETE)
    return BackupPoint.objects.create(vm=vm, destination=destination, strategy="cbt", **fields)


def test_it_reads_a_vms_write_rate_from_its_incrementals(tmp_path):
    build_estate(1, destination_path=str(tmp_path))
    vm = VM.objects.get()
    destination = vm.backup_points.get().destination
    t0 = timezone.now() - timedelta(days=2)
    full = make_point(vm, destination, started=t0, bytes_transferred=10 * 2**30)
    inc1 = make_point(
        vm, destination, parent=full, type="incremental", started=t0 + timedelta(hours=24), bytes_transferred=2**30
    )
    make_point(
        vm,
        destination,
        parent=inc1,
        type="incremental",
        started=t0 + timedelta(hours=30),
        bytes_transferred=3 * 2**30,
        status=BackupPoint.Status.FAILED,
    )
    inc2 = make_point(
        vm, destination, parent=inc1, type="incremental", started=t0 + timedelta(hours=36), bytes_transferred=6 * 2**30
    )

    samples = change_history(vm.pk)

    assert [s.point_id for s in samples] == [inc1.pk, inc2.pk]  # fulls and failed attempts tell no change
    assert samples[0].bytes_per_hour == pytest.approx(2**30 / 24)
    assert samples[1].bytes_per_hour == pytest.approx(6 * 2**30 / 12)
