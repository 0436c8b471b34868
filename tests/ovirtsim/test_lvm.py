"""ovirtsim's LVM: a VG per block domain on a loop device, LVs activated as loop devices per host."""

import json
import os
import shlex
import subprocess
import sys

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from ovirtsim.lvm import BLANK_UUID, EXTENT_SIZE, Lvm, LvmError
from tests.ovirtsim.helpers import add_disk, download, identical, make_image, wait_for

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


def vdsm_config(lvm: Lvm, vg: str) -> list[str]:
    """`--config` naming the VG's PV, as vdsm passes it to every LVM command on a host."""
    (pv,) = {lvm.vg_info(vg)["pv"]}
    return ["--config", f'devices {{ filter=["a|^{pv}$|", "r|.*|"] use_devicesfile=0 }}']


def test_it_answers_a_hosts_lvs_and_lvchange_with_this_hosts_activation(lvm, tmp_path):
    lvm.create_vg(VG, 1024 * MiB)
    lvm.create_lv(VG, LV, MiB, tags=("IU_img",))
    config = vdsm_config(lvm, VG)

    def host(*args):
        return subprocess.run(
            [sys.executable, "-m", "ovirtsim.lvm", "--state-dir", str(tmp_path), "--host", HOST, *args],
            capture_output=True,
            text=True,
        )

    def attr():
        out = host("lvs", *config, "--reportformat", "json", "-o", "vg_name,lv_name,lv_attr,lv_active", f"{VG}/{LV}")
        assert out.returncode == 0, out.stderr
        row = json.loads(out.stdout)["report"][0]["lv"][0]
        return row["lv_attr"][4], row["lv_active"]

    # The host's own LVM filter hides the domain's device, as vdsm-tool config-lvm-filter leaves a host.
    for hidden in (host("lvs", VG), host("lvchange", "-ay", f"{VG}/{LV}")):
        assert hidden.returncode == 5 and f'Volume group "{VG}" not found' in hidden.stderr, hidden.stderr
    assert lvm.active_on(VG, LV) == []
    assert attr() == ("-", "")
    result = host("lvchange", *config, "-ay", f"{VG}/{LV}")
    assert result.returncode == 0, result.stderr
    assert attr() == ("a", "active")
    assert lvm.lv_path(HOST, VG, LV).is_block_device()
    listed = host("lvs", *config, VG)
    assert any(LV in line and "-wi-a-----" in line for line in listed.stdout.splitlines()), listed.stdout
    assert host("lvchange", "-an", f"{VG}/{LV}").returncode == 5  # hidden: still active
    assert host("lvchange", f"--config={config[1]}", "-an", f"{VG}/{LV}").returncode == 0
    assert attr() == ("-", "")
    lvm.set_locked_elsewhere(VG, LV, "host9")
    refused = host("lvchange", *config, "-ay", f"{VG}/{LV}")
    assert refused.returncode == 5
    assert f"LV locked by other host: {VG}/{LV}" in refused.stderr


# ----- the engine: block domain volumes are LVs ------------------------------------------


def _block_domain(conn):
    (sd,) = conn.system_service().storage_domains_service().list(search="name=data-block")
    return sd


def _expected(path, size: int, writes) -> None:
    make_image(path, size=size, writes=writes, fmt="raw")


@pytest.mark.slow
def test_it_keeps_block_disks_as_lvs_through_snapshots_merges_runs_and_transfers(demo_sim, tmp_path):
    lvm = demo_sim.lvm()
    with demo_sim.connect() as conn:
        sd = _block_domain(conn)
        raw = add_disk(conn, name="lvm_raw", size=48 * MiB, fmt="raw", sparse=False, sd_name="data-block")
        cow = add_disk(conn, name="lvm_cow", size=32 * MiB, fmt="cow", sd_name="data-block")
        with pytest.raises(sdk.Error, match="RAW Sparse"):
            add_disk(conn, name="lvm_raw_sparse", size=MiB, fmt="raw", sparse=True, sd_name="data-block")
        lvs = {lv["name"]: lv for lv in lvm.lvs(sd.id)}
        for disk, size in ((raw, 128 * MiB), (cow, 128 * MiB)):
            lv = lvs[disk.image_id]
            assert lv["size"] == size
            assert f"IU_{disk.id}" in lv["tags"] and f"PU_{BLANK_UUID}" in lv["tags"]
            assert lvm.active_on(sd.id, disk.image_id) == []
        assert not (demo_sim.state_dir / "storage" / sd.id / "images" / raw.id).exists()

        demo_sim.guest_write(raw.id, 0, b"\x61" * MiB)
        demo_sim.guest_write(cow.id, 4 * MiB, b"\x62" * MiB)

        cluster = conn.system_service().clusters_service().list(search="name=Development")[0]
        vms = conn.system_service().vms_service()
        vm = vms.add(types.Vm(name="lvm01", cluster=types.Cluster(id=cluster.id)))
        vm_service = vms.vm_service(vm.id)
        for disk in (raw, cow):
            vm_service.disk_attachments_service().add(
                types.DiskAttachment(disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO, active=True)
            )
        snapshots = vm_service.snapshots_service()
        snap = snapshots.add(types.Snapshot(description="lvm"))
        wait_for(lambda: snapshots.snapshot_service(snap.id).get().snapshot_status == types.SnapshotStatus.OK)
        disks = conn.system_service().disks_service()
        raw_top = disks.disk_service(raw.id).get().image_id
        cow_top = disks.disk_service(cow.id).get().image_id
        assert f"PU_{raw.image_id}" in lvm.lv(sd.id, raw_top)["tags"]
        base_slot = next(int(t[3:]) for t in lvm.lv(sd.id, raw.image_id)["tags"] if t.startswith("MD_"))
        top_slot = next(int(t[3:]) for t in lvm.lv(sd.id, raw_top)["tags"] if t.startswith("MD_"))
        assert lvm.read_metadata(sd.id, base_slot)["VOLTYPE"] == "INTERNAL"
        top_meta = lvm.read_metadata(sd.id, top_slot)
        assert (top_meta["VOLTYPE"], top_meta["PUUID"], top_meta["FORMAT"]) == ("LEAF", raw.image_id, "COW")

        demo_sim.guest_write(raw.id, 8 * MiB, b"\x63" * MiB)
        demo_sim.guest_write(cow.id, 4 * MiB, b"\x64" * MiB)

        vm_service.start()
        wait_for(lambda: vm_service.get().status == types.VmStatus.UP, what="lvm01 up")
        host_id = vm_service.get().host.id
        for volume in (raw.image_id, raw_top, cow.image_id, cow_top):
            assert lvm.active_on(sd.id, volume) == [host_id]
            assert lvm.holders(host_id, sd.id, volume) == [f"vm:{vm.id}"]

        # The snapshot's volumes, read while the VM runs (a transfer on the VM's host).
        out = tmp_path / "raw-snap.raw"
        download(conn, demo_sim.ca_file, out, snapshot_id=raw.image_id, fmt="raw", out_fmt="raw")
        _expected(tmp_path / "raw-snap.expected", 48 * MiB, [(0x61, 0, MiB)])
        assert identical(out, tmp_path / "raw-snap.expected")
        out = tmp_path / "cow-snap.raw"
        download(conn, demo_sim.ca_file, out, snapshot_id=cow.image_id, fmt="raw", out_fmt="raw")
        _expected(tmp_path / "cow-snap.expected", 32 * MiB, [(0x62, 4 * MiB, MiB)])
        assert identical(out, tmp_path / "cow-snap.expected")
        assert lvm.holders(host_id, sd.id, raw.image_id) == [f"vm:{vm.id}"]  # the transfer let go of it

        # The running VM's qemu writes through its LVs, and takes a live snapshot and merge on them.
        demo_sim.guest_write(raw.id, 16 * MiB, b"\x65" * MiB)
        live = snapshots.add(types.Snapshot(description="live"))
        wait_for(lambda: snapshots.snapshot_service(live.id).get().snapshot_status == types.SnapshotStatus.OK)
        raw_live = disks.disk_service(raw.id).get().image_id
        assert f"PU_{raw_top}" in lvm.lv(sd.id, raw_live)["tags"]
        assert lvm.holders(host_id, sd.id, raw_live) == [f"vm:{vm.id}"]
        demo_sim.guest_write(raw.id, 20 * MiB, b"\x66" * MiB)
        snapshots.snapshot_service(live.id).remove()
        wait_for(lambda: live.id not in {s.id for s in snapshots.list()}, what="live merge")
        assert raw_live not in {lv["name"] for lv in lvm.lvs(sd.id)}
        assert disks.disk_service(raw.id).get().image_id == raw_top

        vm_service.stop()
        wait_for(lambda: vm_service.get().status == types.VmStatus.DOWN, what="lvm01 down")
        for volume in (raw.image_id, raw_top, cow.image_id, cow_top):
            assert lvm.active_on(sd.id, volume) == []

        snapshots.snapshot_service(snap.id).remove()
        wait_for(lambda: snap.id not in {s.id for s in snapshots.list()}, what="snapshot merged")
        wait_for(lambda: disks.disk_service(raw.id).get().status == types.DiskStatus.OK)
        remaining = {lv["name"] for lv in lvm.lvs(sd.id)}
        assert raw.image_id in remaining and raw_top not in remaining
        assert cow.image_id in remaining and cow_top not in remaining
        assert lvm.read_metadata(sd.id, top_slot) == {}
        assert lvm.read_metadata(sd.id, base_slot)["VOLTYPE"] == "LEAF"
        out = tmp_path / "raw-final.raw"
        download(conn, demo_sim.ca_file, out, disk_id=raw.id, fmt="raw", out_fmt="raw")
        _expected(
            tmp_path / "raw-final.expected",
            48 * MiB,
            [(0x61, 0, MiB), (0x63, 8 * MiB, MiB), (0x65, 16 * MiB, MiB), (0x66, 20 * MiB, MiB)],
        )
        assert identical(out, tmp_path / "raw-final.expected")
        assert out.stat().st_size == 48 * MiB  # the disk's size, not its LV's
        out = tmp_path / "cow-final.qcow2"
        download(conn, demo_sim.ca_file, out, disk_id=cow.id, fmt="raw", out_fmt="qcow2")
        _expected(tmp_path / "cow-final.expected", 32 * MiB, [(0x64, 4 * MiB, MiB)])
        assert identical(out, tmp_path / "cow-final.expected")

        vm_service.remove(detach_only=False)
        wait_for(lambda: not {raw.image_id, cow.image_id} & {lv["name"] for lv in lvm.lvs(sd.id)}, what="LVs gone")


def test_it_refuses_activation_of_an_lv_active_on_another_host(demo_sim, tmp_path):
    lvm = demo_sim.lvm()
    with demo_sim.connect() as conn:
        sd = _block_domain(conn)
        disk = add_disk(conn, name="lvm_elsewhere", size=16 * MiB, fmt="cow", sd_name="data-block")
        try:
            assert demo_sim.set_lv_active_elsewhere(disk.id, "host9") == [disk.image_id]
            transfers = conn.system_service().image_transfers_service()
            transfer = transfers.add(
                types.ImageTransfer(
                    disk=types.Disk(id=disk.id),
                    direction=types.ImageTransferDirection.DOWNLOAD,
                    format=types.DiskFormat.RAW,
                )
            )
            service = transfers.image_transfer_service(transfer.id)
            wait_for(lambda: service.get().phase == types.ImageTransferPhase.FINISHED_FAILURE, what="transfer failed")
            events = conn.system_service().events_service().list(max=20)
            assert any(f"LV locked by other host: {sd.id}/{disk.image_id}" in (e.description or "") for e in events)
            assert lvm.active_on(sd.id, disk.image_id) == []
            demo_sim.set_lv_active_elsewhere(disk.id, None)
            download(conn, demo_sim.ca_file, tmp_path / "out.raw", disk_id=disk.id, fmt="raw", out_fmt="raw")
            assert lvm.active_on(sd.id, disk.image_id) == []
        finally:
            demo_sim.set_lv_active_elsewhere(disk.id, None)
            wait_for(
                lambda: conn.system_service().disks_service().disk_service(disk.id).get().status == types.DiskStatus.OK
            )
            conn.system_service().disks_service().disk_service(disk.id).remove()


def test_it_detaches_every_loop_device_on_stop_and_after_a_crash(tmp_path):
    from ovirtsim import Simulator

    sim = Simulator(tmp_path / "engine", seed="demo").start()
    try:
        lvm = sim.lvm()
        before = lvm.attached_loops()
        assert len(before) >= 2  # the PV, and the LV of db01 (running) on its host
        os.kill(sim.pid, 9)  # a crash: nothing is detached
        sim._proc.wait()
        sim._proc = None
        assert lvm.attached_loops() == before
        sim.start()
        # Found by their backing file and detached; db01's LV active again, for its VM.
        after = lvm.attached_loops()
        assert len(after) == len(before)
        with sim.connect() as conn:
            (db01,) = conn.system_service().vms_service().list(search="name=db01")
            vm_disks = conn.system_service().vms_service().vm_service(db01.id).disk_attachments_service().list()
            (data,) = [
                d
                for a in vm_disks
                if (d := conn.system_service().disks_service().disk_service(a.disk.id).get()).name == "db01_data"
            ]
            sd = _block_domain(conn)
            assert lvm.holders(db01.host.id, sd.id, data.image_id) == [f"vm:{db01.id}"]
    finally:
        sim.stop()
    assert lvm.attached_loops() == []


# ----- a host's view over SSH --------------------------------------------------------------


def test_it_lets_a_host_activate_read_and_deactivate_lvs_over_ssh(demo_sim, tmp_path):
    from tests.ovirtsim.test_hosts_ssh import known_hosts, ssh

    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    demo_sim.authorize_key(key.with_suffix(".pub").read_text())
    lvm = demo_sim.lvm()
    with demo_sim.connect() as conn:
        system = conn.system_service()
        hosts = {h.name: h for h in system.hosts_service().list()}
        host1, host3 = hosts["host1"], hosts["host3"]
        known1, known3 = known_hosts(tmp_path, host1), known_hosts(tmp_path, host3)
        sd = _block_domain(conn)
        # A disk of its own (the demo engine is shared: other tests add snapshots to the demo's disks).
        app_disk = add_disk(conn, name="lvm_over_ssh", size=16 * MiB, fmt="cow", sd_name="data-block")
        demo_sim.guest_write(app_disk.id, MiB, b"\x41" * MiB)
        (db_disk,) = system.disks_service().list(search="name=db01_data")
        vg, lv = sd.id, app_disk.image_id
        c = " ".join(shlex.quote(a) for a in vdsm_config(lvm, vg))  # as vdsm passes it

        def run(host, known, command):
            result = ssh(host, key, known, command)
            return result.returncode, result.stdout.decode(), result.stderr.decode()

        rc, out, err = run(host1, known1, f"lvs {c} --reportformat json -o vg_name,lv_name,lv_attr,lv_tags {vg}")
        assert rc == 0, err
        rows = {r["lv_name"]: r for r in json.loads(out)["report"][0]["lv"]}
        assert rows[lv]["lv_attr"][4] == "-" and f"IU_{app_disk.id}" in rows[lv]["lv_tags"]
        # db01 runs on host1: its LV is active (and open) there, and not on host3.
        assert rows[db_disk.image_id]["lv_attr"][4:6] == "ao"
        assert run(host3, known3, f"test -b /dev/{vg}/{db_disk.image_id}")[0] == 1
        rc, _, err = run(host1, known1, f"lvchange {c} -an {vg}/{db_disk.image_id}")
        assert rc == 5 and f"Logical volume {vg}/{db_disk.image_id} in use." in err

        out_file = tmp_path / "from-host.raw"
        rc, out, err = run(
            host1,
            known1,
            f"lvchange {c} -ay {vg}/{lv} && qemu-img info --output=json /dev/{vg}/{lv}"
            f" && qemu-img convert -f qcow2 -O raw /dev/{vg}/{lv} {out_file}",
        )
        assert rc == 0, err
        assert json.loads(out)["format"] == "qcow2" and json.loads(out)["virtual-size"] == 16 * MiB
        make_image(tmp_path / "expected.raw", size=16 * MiB, writes=[(0x41, MiB, MiB)], fmt="raw")
        assert identical(out_file, tmp_path / "expected.raw")
        assert lvm.active_on(vg, lv) == [host1.id] and lvm.holders(host1.id, vg, lv) == ["manual"]

        rc, _, err = run(host1, known1, f"lvchange {c} -an {vg}/{lv} && test ! -e /dev/{vg}/{lv}")
        assert rc == 0, err
        assert lvm.active_on(vg, lv) == []

        demo_sim.set_lv_active_elsewhere(app_disk.id, "host9")
        try:
            rc, _, err = run(host3, known3, f"lvchange {c} -ay {vg}/{lv}")
            assert rc == 5 and f"LV locked by other host: {vg}/{lv}" in err
            assert lvm.active_on(vg, lv) == []
        finally:
            demo_sim.set_lv_active_elsewhere(app_disk.id, None)
        # The real LVM tools on the host read the host's configuration (sshd's SetEnv), whose filter
        # hides the domain's devices from plain commands, as on an oVirt host.
        rc, out, err = run(host3, known3, f"/sbin/lvs --noheadings -o lv_name {vg}")
        assert rc == 5 and f'Volume group "{vg}" not found' in err, err
        rc, out, err = run(host3, known3, f"/sbin/lvs {c} --noheadings -o lv_name {vg}")
        assert rc == 0 and lv in out.split(), err
        system.disks_service().disk_service(app_disk.id).remove()


def test_it_backs_up_block_disks_full_then_incremental_cold_and_live(demo_sim, tmp_path):
    from tests.ovirtsim.test_backups import backup_vm, disk_now, download_backup_disk, finalize

    lvm = demo_sim.lvm()
    with demo_sim.connect() as conn:
        sd = _block_domain(conn)
        cow = add_disk(conn, name="lvm_cbt", size=32 * MiB, fmt="cow", sd_name="data-block", backup="incremental")
        raw = add_disk(conn, name="lvm_plain", size=16 * MiB, fmt="raw", sparse=False, sd_name="data-block")
        demo_sim.guest_write(cow.id, 0, b"\x71" * MiB)
        demo_sim.guest_write(raw.id, MiB, b"\x72" * MiB)
        cluster = conn.system_service().clusters_service().list(search="name=Development")[0]
        vms = conn.system_service().vms_service()
        vm = vms.add(types.Vm(name="lvm02", cluster=types.Cluster(id=cluster.id)))
        vm_service = vms.vm_service(vm.id)
        for disk in (cow, raw):
            vm_service.disk_attachments_service().add(
                types.DiskAttachment(disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO, active=True)
            )
        try:
            full = backup_vm(conn, vm.id, [cow.id, raw.id])
            assert full.phase == types.BackupPhase.READY
            for disk in (cow, raw):
                download_backup_disk(conn, demo_sim, full, disk.id, tmp_path / f"full-{disk.id}.qcow2")
            assert finalize(conn, full) == types.BackupPhase.SUCCEEDED
            assert lvm.active_on(sd.id, cow.image_id) == [] and lvm.active_on(sd.id, raw.image_id) == []

            demo_sim.guest_write(cow.id, 4 * MiB, b"\x73" * MiB)
            cold = backup_vm(conn, vm.id, [cow.id], from_checkpoint=full.to_checkpoint_id)
            layer = tmp_path / "cold-inc.qcow2"
            download_backup_disk(conn, demo_sim, cold, cow.id, layer, backing_file=tmp_path / f"full-{cow.id}.qcow2")
            assert finalize(conn, cold) == types.BackupPhase.SUCCEEDED
            disk_now(conn, demo_sim, cow.id, tmp_path / "now-cold.raw")
            assert identical(layer, tmp_path / "now-cold.raw")

            vm_service.start()
            wait_for(lambda: vm_service.get().status == types.VmStatus.UP, what="lvm02 up")
            demo_sim.guest_write(cow.id, 8 * MiB, b"\x74" * MiB)
            live = backup_vm(conn, vm.id, [cow.id], from_checkpoint=cold.to_checkpoint_id)
            live_layer = tmp_path / "live-inc.qcow2"
            download_backup_disk(conn, demo_sim, live, cow.id, live_layer, backing_file=layer)
            assert finalize(conn, live) == types.BackupPhase.SUCCEEDED
            vm_service.stop()
            wait_for(lambda: vm_service.get().status == types.VmStatus.DOWN, what="lvm02 down")
            disk_now(conn, demo_sim, cow.id, tmp_path / "now-live.raw")
            assert identical(live_layer, tmp_path / "now-live.raw")
            make_image(tmp_path / "raw.expected", size=16 * MiB, writes=[(0x72, MiB, MiB)], fmt="raw")
            assert identical(tmp_path / f"full-{raw.id}.qcow2", tmp_path / "raw.expected")
            assert lvm.active_on(sd.id, cow.image_id) == []
        finally:
            if vm_service.get().status != types.VmStatus.DOWN:
                vm_service.stop()
                wait_for(lambda: vm_service.get().status == types.VmStatus.DOWN, what="lvm02 down")
            vm_service.remove(detach_only=False)
