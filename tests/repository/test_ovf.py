"""A point's OVF made fit for a restore: the disks the restore does not make left out."""

from ovirtsim.ovf import OvfDisk, OvfVm, build_ovf, parse_ovf
from repository.ovf import ovf_problem, without_disks

MiB = 1024**2


def engine_ovf() -> str:
    """An OVF as the engine writes it for a VM with three disks and a NIC."""
    return build_ovf(
        OvfVm(
            id="8b1b0d4e-0000-4000-8000-000000000001",
            name="web01",
            memory=2048 * MiB,
            cores=2,
            disks=[OvfDisk(f"disk-{n}", f"volume-{n}", f"web01_{n}", (n + 1) * MiB, bootable=n == 0) for n in range(3)],
            nics=[{"id": "nic-1", "name": "nic1", "mac": "56:6f:00:00:00:01"}],
        )
    )


def test_it_leaves_out_the_disks_a_restore_does_not_make_and_keeps_the_rest():
    whole = engine_ovf()
    ovf = without_disks(whole, keep={"disk-0", "disk-2"})
    assert ovf_problem(ovf.encode()) == ""
    assert "disk-1" not in ovf and "volume-1" not in ovf
    before, after = parse_ovf(whole), parse_ovf(ovf)  # what the engine reads of each
    assert [d.disk_id for d in after.disks] == ["disk-0", "disk-2"]
    assert after.disks == [d for d in before.disks if d.disk_id != "disk-1"]
    assert (after.name, after.memory, after.cores, after.nics) == (
        before.name,
        before.memory,
        before.cores,
        before.nics,
    )
    assert ovf.count("xmlns:ovf=") == 1 and "<ovf:Envelope" in ovf  # the engine's prefixes, as it reads them


def test_it_hands_back_an_ovf_whose_disks_are_all_kept_as_it_was():
    ovf = engine_ovf()
    assert without_disks(ovf, keep={"disk-0", "disk-1", "disk-2"}) is ovf
