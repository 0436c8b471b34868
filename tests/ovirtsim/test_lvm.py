"""ovirtsim's LVM: a VG per block domain on a loop device, LVs activated as loop devices per host."""

import json
import os
import subprocess
import sys

import pytest

from ovirtsim.lvm import BLANK_UUID, EXTENT_SIZE, Lvm, LvmError

MiB = 1024**2
VG = "6f1b1c4e-0000-4000-8000-00000000b10c"
LV = "0b8f1c2d-1111-4111-8111-111111111111"
HOST = "host-1"


@pytest.fixture
def lvm(tmp_path):
    lvm = Lvm(tmp_path)
    lvm.start()
    yield lvm
    lvm.stop()
    assert lvm.attached_loops() == []


def read_device(path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def write_device(path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_it_keeps_data_written_through_an_activated_lv_across_deactivation(lvm):
    lvm.create_vg(VG, 4 * 1024 * MiB)
    lvm.create_lv(VG, LV, 200 * MiB, tags=("IU_img", f"PU_{BLANK_UUID}", "MD_4"))
    other = "0b8f1c2d-2222-4222-8222-222222222222"
    lvm.create_lv(VG, other, MiB)
    lv = lvm.lv(VG, LV)
    assert lv["size"] == 2 * EXTENT_SIZE  # rounded up to vdsm's 128 MiB extents
    assert set(lv["tags"]) == {"IU_img", f"PU_{BLANK_UUID}", "MD_4"}
    assert not lvm.is_active(HOST, VG, LV)

    path = lvm.activate(HOST, VG, LV)
    assert path.is_block_device()
    assert int(subprocess.run(["blockdev", "--getsize64", str(path)], capture_output=True, text=True).stdout) == (
        2 * EXTENT_SIZE
    )
    write_device(path, 0, b"A" * 4096)
    write_device(path, 2 * EXTENT_SIZE - 4096, b"Z" * 4096)
    # The neighbour LV's extents are untouched: the loop device covers only this LV's range.
    other_path = lvm.activate(HOST, VG, other)
    assert read_device(other_path, 0, 4096) == b"\0" * 4096
    lvm.deactivate(HOST, VG, other)

    lvm.deactivate(HOST, VG, LV)
    assert not path.exists()
    assert not lvm.is_active(HOST, VG, LV)

    path = lvm.activate(HOST, VG, LV)
    assert read_device(path, 0, 4096) == b"A" * 4096
    assert read_device(path, 2 * EXTENT_SIZE - 4096, 4096) == b"Z" * 4096


def test_it_survives_a_restart_and_detaches_what_a_crash_left(tmp_path):
    lvm = Lvm(tmp_path)
    lvm.start()
    lvm.create_vg(VG, 1024 * MiB)
    lvm.create_lv(VG, LV, MiB)
    write_device(lvm.activate(HOST, VG, LV), 0, b"kept")
    # A crash: nothing is stopped. The next start finds our loop devices by their backing file.
    assert len(lvm.attached_loops()) == 2
    again = Lvm(tmp_path)
    again.start()
    try:
        assert len(again.attached_loops()) == 1  # the PV only; activations do not survive
        assert not again.is_active(HOST, VG, LV)
        assert [x["name"] for x in again.lvs(VG) if x["name"] == LV] == [LV]
        assert read_device(again.activate(HOST, VG, LV), 0, 4) == b"kept"
    finally:
        again.stop()
    assert again.attached_loops() == []


def test_it_activates_per_host_and_deactivates_only_when_nobody_holds_it(lvm):
    lvm.create_vg(VG, 1024 * MiB)
    lvm.create_lv(VG, LV, MiB)
    lvm.activate(HOST, VG, LV, holder="engine:vm")
    assert lvm.active_on(VG, LV) == [HOST]
    assert not lvm.is_active("host-2", VG, LV)
    with pytest.raises(LvmError, match="in use"):
        lvm.deactivate(HOST, VG, LV)  # an administrator's lvchange -an of an LV the VM uses
    lvm.activate(HOST, VG, LV)  # and an administrator's lvchange -ay of it: already active
    lvm.release_holder("engine:vm")
    assert lvm.is_active(HOST, VG, LV)  # the manual activation stays
    lvm.deactivate(HOST, VG, LV)
    assert lvm.active_on(VG, LV) == []


def test_it_refuses_to_activate_an_lv_locked_by_another_host(lvm):
    lvm.create_vg(VG, 1024 * MiB)
    lvm.create_lv(VG, LV, MiB)
    lvm.set_locked_elsewhere(VG, LV, "host9")
    with pytest.raises(LvmError, match=f"LV locked by other host: {VG}/{LV}"):
        lvm.activate(HOST, VG, LV)
    lvm.set_locked_elsewhere(VG, LV, None)
    lvm.activate(HOST, VG, LV)


def test_it_extends_and_removes_lvs_and_refuses_multi_segment_activation(lvm):
    lvm.create_vg(VG, 1024 * MiB)
    lvm.create_lv(VG, LV, MiB)
    second = "0b8f1c2d-3333-4333-8333-333333333333"
    lvm.create_lv(VG, second, MiB)
    write_device(lvm.activate(HOST, VG, second), 0, b"second")
    lvm.deactivate(HOST, VG, second)
    lvm.activate(HOST, VG, LV)
    with pytest.raises(LvmError, match="active"):
        lvm.extend_lv(VG, LV, 2 * EXTENT_SIZE)
    lvm.deactivate(HOST, VG, LV)
    lvm.extend_lv(VG, LV, 2 * EXTENT_SIZE)  # its next extent is taken: a second segment
    assert lvm.lv(VG, LV)["size"] == 2 * EXTENT_SIZE
    with pytest.raises(LvmError, match="2 segments"):
        lvm.activate(HOST, VG, LV)
    lvm.remove_lv(VG, LV)
    assert LV not in {x["name"] for x in lvm.lvs(VG)}
    # A new LV on the freed extents reads zeros, not the removed volume's data.
    lvm.remove_lv(VG, second)
    lvm.create_lv(VG, LV, MiB)
    assert read_device(lvm.activate(HOST, VG, LV), 0, 6) == b"\0" * 6


def test_it_keeps_vdsm_metadata_in_the_metadata_lv(lvm):
    lvm.create_vg(VG, 1024 * MiB)
    slot = lvm.free_metadata_slot(VG)
    lvm.create_lv(VG, LV, MiB, tags=(f"MD_{slot}",))
    assert lvm.free_metadata_slot(VG) == slot + 1
    lvm.write_metadata(VG, slot, {"IMAGE": "img", "PUUID": BLANK_UUID, "FORMAT": "RAW"})
    assert lvm.read_metadata(VG, slot) == {"FORMAT": "RAW", "IMAGE": "img", "PUUID": BLANK_UUID}
    # As on a host: activate the metadata LV and read the slot (V5: 8 KiB slots after 1 MiB).
    raw = read_device(lvm.activate(HOST, VG, "metadata"), MiB + slot * 8192, 8192)
    assert raw.split(b"\0", 1)[0].decode() == f"FORMAT=RAW\nIMAGE=img\nPUUID={BLANK_UUID}\nEOF\n"


def test_it_answers_a_hosts_lvs_and_lvchange_with_this_hosts_activation(lvm, tmp_path):
    lvm.create_vg(VG, 1024 * MiB)
    lvm.create_lv(VG, LV, MiB, tags=("IU_img",))

    def host(*args):
        return subprocess.run(
            [sys.executable, "-m", "ovirtsim.lvm", "--state-dir", str(tmp_path), "--host", HOST, *args],
            capture_output=True,
            text=True,
        )

    def attr():
        out = host("lvs", "--reportformat", "json", "-o", "vg_name,lv_name,lv_attr,lv_active", f"{VG}/{LV}")
        assert out.returncode == 0, out.stderr
        row = json.loads(out.stdout)["report"][0]["lv"][0]
        return row["lv_attr"][4], row["lv_active"]

    assert attr() == ("-", "")
    result = host("lvchange", "-ay", f"{VG}/{LV}")
    assert result.returncode == 0, result.stderr
    assert attr() == ("a", "active")
    assert lvm.lv_path(HOST, VG, LV).is_block_device()
    plain = host("lvs", VG)
    assert any(LV in line and "-wi-a-----" in line for line in plain.stdout.splitlines()), plain.stdout
    assert host("lvchange", "-an", f"{VG}/{LV}").returncode == 0
    assert attr() == ("-", "")
    lvm.set_locked_elsewhere(VG, LV, "host9")
    refused = host("lvchange", "-ay", f"{VG}/{LV}")
    assert refused.returncode == 5
    assert f"LV locked by other host: {VG}/{LV}" in refused.stderr
