"""The `large` seed (issue 22): an estate of 5,000 VMs as records, its disks' images made only
when something reads them."""

import json
import subprocess

from ovirtsim import Simulator
from ovirtsim.engine import Engine
from ovirtsim.seed import LARGE, get_seed
from tests.ovirtsim.helpers import download

GiB = 1024**3


def test_it_seeds_a_large_estate_without_image_files(tmp_path):
    engine = Engine(tmp_path, imageio=None)
    get_seed("large")(engine)
    store = engine.store
    counts = {name: len(store[name]) for name in ("datacenters", "clusters", "hosts", "storagedomains", "vms", "disks")}
    assert counts == {
        "datacenters": LARGE["data_centers"],
        "clusters": 20,
        "hosts": 60,
        "storagedomains": 30,
        "vms": 5000,
        "disks": 12000,
    }
    assert sum(len(vm["disk_attachments"]) for vm in store["vms"].values()) == 12000
    # Each VM's disks are on domains of its own cluster's data center, as the engine requires.
    for vm in list(store["vms"].values())[:200]:
        dc = store["clusters"][vm["cluster_id"]]["dc_id"]
        assert {
            store["storagedomains"][store["disks"][a["disk_id"]]["sd_id"]]["dc_id"] for a in vm["disk_attachments"]
        } == {dc}
    assert not list(tmp_path.glob("storage/*/images/*/*"))  # records only
    disk = next(iter(store["disks"].values()))
    assert engine.store_actual(disk, disk["volumes"][0]["id"]) == 0
    assert not list(tmp_path.glob("storage/*/images/*/*"))  # asking its size made nothing
    path = engine.volume_path(disk, disk["volumes"][0]["id"])
    info = json.loads(
        subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True).stdout
    )
    assert (info["format"], info["virtual-size"]) == ("qcow2", disk["provisioned_size"])
    assert path.with_suffix(".meta").exists()  # as vdsm keeps it beside the volume


def test_it_makes_a_seeded_disk_when_a_client_downloads_it(tmp_path):
    with Simulator(tmp_path / "engine", seed="scale:2") as sim:
        conn = sim.connect()
        try:
            disk = conn.system_service().disks_service().list()[0]
            assert disk.provisioned_size == 10 * GiB
            download(conn, sim.ca_file, tmp_path / "copy.qcow2", disk_id=disk.id)
        finally:
            conn.close()
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(tmp_path / "copy.qcow2")], capture_output=True, check=True
        ).stdout
    )
    assert info["virtual-size"] == 10 * GiB
    assert info["actual-size"] < 16 * 1024**2  # thin: nothing written
