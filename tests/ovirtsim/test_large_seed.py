"""The `large` seed (issue 22): an estate of 5,000 VMs as records, its disks' images made only
when something reads them."""

import json
import subprocess

import pytest

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


def test_it_spreads_a_scale_seed_over_the_clusters_asked(tmp_path):
    engine = Engine(tmp_path, imageio=None)
    get_seed("scale:5:2")(engine)
    store = engine.store
    names = {c["id"]: c["name"] for c in store["clusters"].values()}
    assert sorted(names.values()) == ["Default", "cluster2"]
    per_cluster = {}
    for vm in store["vms"].values():
        per_cluster.setdefault(names[vm["cluster_id"]], []).append(vm["name"])
    assert per_cluster == {"Default": ["vm00000", "vm00002", "vm00004"], "cluster2": ["vm00001", "vm00003"]}
    # A host up in each cluster, as a backup of a VM there needs one; one SPM for the data center.
    assert sorted((names[h["cluster_id"]], h["status"]) for h in store["hosts"].values()) == [
        ("Default", "up"),
        ("cluster2", "up"),
    ]
    assert sum(bool(h.get("spm")) for h in store["hosts"].values()) == 1
    assert not list(tmp_path.glob("storage/*/images/*/*"))  # records only, as scale:N


def test_it_refuses_a_scale_seed_of_no_clusters(tmp_path):
    with pytest.raises(ValueError, match="unknown seed 'scale:5:0'; choose .* scale:N or scale:N:CLUSTERS"):
        get_seed("scale:5:0")
