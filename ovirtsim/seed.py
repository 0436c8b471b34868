"""Sample engines: `demo` (a small but real data center), `empty`, `scale:N[:C]` and `large` (records
only: their disks' images are made when something first reads them)."""

import re
import tempfile
import uuid
from pathlib import Path

import ovirtsdk4.types as types

from ovirtsim import guest_images, qemu

MiB = 1024**2
GiB = 1024**3

# Fixed ids so tests and docs can name things; the rest are generated.
DEMO_DC = "5849b030-626e-47cb-ad90-3ce782d831b3"


def _id() -> str:
    return str(uuid.uuid4())


def seed_base(engine) -> None:
    engine.store.meta.setdefault("instance_id", _id())
    engine.store.meta.setdefault("admin_id", _id())


def _storage_domain(
    engine,
    *,
    name: str,
    dc_id: str,
    sd_type: str,
    storage_type: str,
    block: bool,
    master: bool = False,
    capacity: int = 512 * GiB,
    address: str = "nfs.example.internal",
    export_path: str | None = None,
    vfs_type: str | None = None,
) -> dict:
    sd_id = _id()
    # An export domain lives on a share of its own, what a node of ours serves over NFS from its
    # staging directory, one per data center (STAGING/DC_NAME): here exports/DC_NAME/SD_ID.
    share = engine.dir / "exports" / (engine.store["datacenters"][dc_id]["name"] if dc_id else name)
    if sd_type == "export":
        address, export_path = "127.0.0.1", str(share)
    path = (share if sd_type == "export" else engine.dir / "storage") / sd_id
    (path / "images").mkdir(parents=True, exist_ok=True)
    sd = {
        "id": sd_id,
        "name": name,
        "description": "",
        "type": sd_type,
        "storage_type": storage_type,
        "block": block,
        "dc_id": dc_id,
        "path": str(path),
        "master": master,
        "capacity": capacity,
        "export_path": None if block else export_path or f"/exports/{name}",
        "address": None if block else address,
        # A GlusterFS domain's connection is `SERVER:/VOLUME`, mounted with vfs type glusterfs.
        "vfs_type": vfs_type,
        # Block domains are real LVM: a VG named by the domain id, an LV per volume.
        "lvm": block,
    }
    engine.store["storagedomains"][sd_id] = sd
    if block:
        engine.ensure_volume_groups()
    if sd_type == "export":
        engine.init_export_domain(sd)
    return sd


def _disk(engine, *, name: str, sd: dict, size: int, fmt: str, sparse: bool, backup: str = "none") -> dict:
    spec = types.Disk(
        name=name,
        provisioned_size=size,
        format=types.DiskFormat(fmt),
        sparse=sparse,
        storage_domains=[types.StorageDomain(id=sd["id"])],
        backup=types.DiskBackup(backup),
    )
    return engine.add_disk(spec, wait=True)


def _attach(vm: dict, disk: dict, *, bootable: bool = False, interface: str = "virtio_scsi") -> None:
    vm["disk_attachments"].append(
        {
            "disk_id": disk["id"],
            "interface": interface,
            "bootable": bootable,
            "active": True,
            "pass_discard": False,
            "read_only": False,
        }
    )


def _write_guest_disk(engine, disk: dict) -> None:
    """The disk's partitions, LVM and filesystems with their files, as guest_files.DISKS lays them out
    for its name, so that a backup's files can be browsed and a restored disk mounted and read."""
    with tempfile.TemporaryDirectory() as tmp, engine.prepared(disk) as host_id:
        path = engine.volume_path(disk, disk["volumes"][0]["id"], host_id=host_id)
        raw = Path(tmp) / "disk.raw"
        guest_images.build_disk(disk["name"], disk["provisioned_size"], raw)
        fmt = "qcow2" if disk["volumes"][0]["format"] == "cow" else "raw"
        qemu.run("qemu-img", "convert", "-q", "-n", "-f", "raw", "-O", fmt, str(raw), str(path))


def _write_pattern(engine, disk: dict, writes: list[tuple[int, int, int]]) -> None:
    """Recognizable data: (pattern byte, offset, length) per write, through qemu-io."""
    fmt = "qcow2" if disk["volumes"][0]["format"] == "cow" else "raw"
    args = ["qemu-io", "-f", fmt]
    for pattern, offset, length in writes:
        args += ["-c", f"write -P {pattern} {offset} {length}"]
    with engine.prepared(disk) as host_id:
        qemu.run(*args, str(engine.volume_path(disk, disk["volumes"][0]["id"], host_id=host_id)))


def seed_demo(engine, *, big_disk: bool = True) -> None:
    seed_base(engine)
    store = engine.store
    dc = {"id": DEMO_DC, "name": "Default", "description": "The default data center"}
    store["datacenters"][dc["id"]] = dc
    prod = {"id": _id(), "name": "Production", "dc_id": dc["id"], "cpu_type": "Intel Cascadelake Server Family"}
    dev = {"id": _id(), "name": "Development", "dc_id": dc["id"], "cpu_type": "Intel Cascadelake Server Family"}
    for c in (prod, dev):
        store["clusters"][c["id"]] = c
    hosts = [
        {
            "id": _id(),
            "name": "host1",
            "address": "host1.example.internal",
            "cluster_id": prod["id"],
            "status": "up",
            "spm": True,
        },
        {
            "id": _id(),
            "name": "host2",
            "address": "host2.example.internal",
            "cluster_id": prod["id"],
            "status": "maintenance",
        },
        {"id": _id(), "name": "host3", "address": "host3.example.internal", "cluster_id": dev["id"], "status": "up"},
    ]
    for h in hosts:
        h["ssh_port"] = 22
        h["versions"] = dict(HOST_VERSIONS)
        store["hosts"][h["id"]] = h
    nfs = _storage_domain(
        engine, name="data-nfs", dc_id=dc["id"], sd_type="data", storage_type="nfs", block=False, master=True
    )
    block = _storage_domain(engine, name="data-block", dc_id=dc["id"], sd_type="data", storage_type="iscsi", block=True)
    gluster = _storage_domain(
        engine,
        name="data-gluster",
        dc_id=dc["id"],
        sd_type="data",
        storage_type="glusterfs",
        block=False,
        capacity=128 * GiB,
        address="gluster.example.internal",
        export_path="/vmstore",
        vfs_type="glusterfs",
    )
    _storage_domain(
        engine, name="export1", dc_id=dc["id"], sd_type="export", storage_type="nfs", block=False, capacity=256 * GiB
    )
    for name, desc in (("production", "Production workloads"), ("no-backup", "Excluded from backups")):
        tag_id = _id()
        store["tags"][tag_id] = {"id": tag_id, "name": name, "description": desc, "parent": None}
    tag_ids = {t["name"]: t["id"] for t in store["tags"].values()}

    def vm(name, cluster, *, status="down", agent=True, os_type="debian_12", memory=2 * GiB, cores=2):
        record = engine._new_vm(
            vm_id=_id(),
            name=name,
            cluster=cluster,
            os_type=os_type,
            memory=memory,
            cores=cores,
            guest_agent=agent,
            description=f"Demo VM {name}",
        )
        record["nics"] = [
            {
                "id": _id(),
                "name": "nic1",
                "interface": "virtio",
                "mac": "56:6f:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:4]),
            }
        ]
        if status == "up":
            record["status"] = "up"
            record["host_id"] = next(h["id"] for h in hosts if h["cluster_id"] == cluster["id"] and h["status"] == "up")
        return record

    web = vm("web01", prod, status="up")
    web["tags"] = [tag_ids["production"]]
    disk = _disk(engine, name="web01_os", sd=nfs, size=64 * MiB, fmt="cow", sparse=True)
    _write_guest_disk(engine, disk)
    _attach(web, disk, bootable=True)
    disk = _disk(engine, name="web01_data", sd=nfs, size=32 * MiB, fmt="raw", sparse=True)
    _write_pattern(engine, disk, [(0x11, 0, MiB), (0x12, 8 * MiB, 2 * MiB), (0x13, 30 * MiB, MiB)])
    _attach(web, disk)

    db = vm("db01", prod, status="up", memory=4 * GiB)
    db["tags"] = [tag_ids["production"]]
    disk = _disk(engine, name="db01_os", sd=nfs, size=64 * MiB, fmt="cow", sparse=True, backup="incremental")
    _write_guest_disk(engine, disk)
    _attach(db, disk, bootable=True)
    disk = _disk(engine, name="db01_data", sd=block, size=48 * MiB, fmt="raw", sparse=False)
    _write_pattern(engine, disk, [(0x21, 0, 4 * MiB), (0x22, 40 * MiB, 4 * MiB)])
    _attach(db, disk)

    legacy = vm("legacy01", prod, status="up", agent=False, os_type="other_linux")
    disk = _disk(engine, name="legacy01_disk", sd=nfs, size=32 * MiB, fmt="raw", sparse=True)
    _write_pattern(engine, disk, [(0x31, 0, 2 * MiB), (0x32, 16 * MiB, 2 * MiB)])
    _attach(legacy, disk, bootable=True, interface="virtio")

    app = vm("app01", dev)
    # disk1: ext4 on the whole disk; disk2: raw data (no partition table, no filesystem); disk3: MBR
    # with NTFS and Btrfs (32 MiB: Btrfs needs 16 MiB at least).
    for n, (fmt, sd, size) in enumerate((("cow", nfs, 48), ("cow", block, 16), ("raw", nfs, 32))):
        disk = _disk(engine, name=f"app01_disk{n + 1}", sd=sd, size=size * MiB, fmt=fmt, sparse=True)
        if n == 1:
            _write_pattern(engine, disk, [(0x41, MiB, MiB)])
        else:
            _write_guest_disk(engine, disk)
        _attach(app, disk, bootable=n == 0)

    test = vm("test01", dev, memory=GiB, cores=1)
    test["tags"] = [tag_ids["no-backup"]]
    disk = _disk(engine, name="test01_os", sd=nfs, size=32 * MiB, fmt="cow", sparse=True)
    _write_pattern(engine, disk, [(0x51, 0, MiB)])
    _attach(test, disk, bootable=True)

    glustervm = vm("gluster01", dev, memory=GiB, cores=1)
    disk = _disk(engine, name="gluster01_os", sd=gluster, size=32 * MiB, fmt="cow", sparse=True)
    _write_pattern(engine, disk, [(0x47, 0, MiB), (0x48, 8 * MiB, MiB)])
    _attach(glustervm, disk, bootable=True)

    # A backup proxy running on this machine: its guest sees disks attached to it as real block
    # devices, its /dev/disk/by-id is a directory (engine.json: proxy_device_dirs); see guest_devices.py.
    proxy = vm("proxy01", prod, status="up", os_type="rhel_9x64", memory=4 * GiB)
    proxy["runs_here"] = True
    _attach(proxy, _disk(engine, name="proxy01_os", sd=nfs, size=32 * MiB, fmt="cow", sparse=True), bootable=True)

    if big_disk:
        big = vm("bigdata01", dev, memory=8 * GiB, cores=4)
        disk = _disk(engine, name="bigdata01_data", sd=nfs, size=8 * GiB, fmt="cow", sparse=True, backup="incremental")
        # 1 GiB of data spread over the 8 GiB: 16 MiB at the start of every 128 MiB.
        _write_pattern(engine, disk, [(0x60 + (n % 16), n * 128 * MiB, 16 * MiB) for n in range(64)])
        _attach(big, disk, bootable=True)
    engine.store.save()


# The packages a host reports (RPM version-release, as vdsm reports them to the engine): an oVirt
# 4.5 host on EL9. A host's own "versions" in its record are what the API shows of it.
HOST_VERSIONS = {"vdsm": "4.50.5.1-1.el9", "libvirt": "9.0.0-10.el9"}


def _cluster_with_host(store, dc: dict, *, name: str, host: str) -> dict:
    """A cluster of the data center with one host, up and SPM; returns the cluster."""
    cluster = {"id": _id(), "name": name, "dc_id": dc["id"], "cpu_type": "Intel Cascadelake Server Family"}
    store["clusters"][cluster["id"]] = cluster
    record = {
        "id": _id(),
        "name": host,
        "address": f"{host}.example.internal",
        "cluster_id": cluster["id"],
        "status": "up",
        "spm": True,
        "ssh_port": 22,
        "versions": dict(HOST_VERSIONS),
    }
    store["hosts"][record["id"]] = record
    return cluster


def seed_empty(engine) -> None:
    """A data center with one cluster, one host and one data domain, and no VMs."""
    seed_base(engine)
    store = engine.store
    dc = {"id": DEMO_DC, "name": "Default", "description": ""}
    store["datacenters"][dc["id"]] = dc
    _cluster_with_host(store, dc, name="Default", host="host1")
    _storage_domain(engine, name="data", dc_id=dc["id"], sd_type="data", storage_type="nfs", block=False, master=True)
    engine.store.save()


def seed_scale(engine, count: int, clusters: int = 1) -> None:
    """`count` VMs with one thin disk each, records only (images made when read): for inventory scale
    tests. With `clusters` above 1, the VMs take turns over that many clusters of the data center
    (Default, then cluster2, ...), each with a host of its own, the data domain shared as in one DC."""
    seed_empty(engine)
    store = engine.store
    default = next(iter(store["clusters"].values()))
    chosen = [default]
    for c in range(2, clusters + 1):
        cluster = {"id": _id(), "name": f"cluster{c}", "dc_id": default["dc_id"], "cpu_type": default["cpu_type"]}
        store["clusters"][cluster["id"]] = cluster
        chosen.append(cluster)
        host = {
            "id": _id(),
            "name": f"host{c}",
            "address": f"host{c}.example.internal",
            "cluster_id": cluster["id"],
            "status": "up",
            "ssh_port": 22,
            "versions": dict(HOST_VERSIONS),
        }
        store["hosts"][host["id"]] = host
    sd = next(iter(store["storagedomains"].values()))
    tag_id = _id()
    store["tags"][tag_id] = {"id": tag_id, "name": "scale", "description": "", "parent": None}
    for n in range(count):
        cluster = chosen[n % len(chosen)]
        vm = engine._new_vm(vm_id=_id(), name=f"vm{n:05d}", cluster=cluster, os_type="rhel_9x64")
        _attach(vm, _lazy_disk(engine, name=f"vm{n:05d}_disk", sd=sd, created=vm["creation_time"]), bootable=True)
        if n % 10 == 0:
            vm["tags"] = [tag_id]
    engine.store.save()


def _lazy_disk(engine, *, name: str, sd: dict, created: str, size: int = 10 * GiB, fmt: str = "cow") -> dict:
    """A thin disk as a record only: its image is made, empty, the first time the engine needs its
    path (`EngineCore.volume_path`), so thousands of disks cost no files until one is read."""
    disk_id = _id()
    disk = {
        "id": disk_id,
        "name": name,
        "description": "",
        "provisioned_size": size,
        "format": fmt,
        "sparse": True,
        "sd_id": sd["id"],
        "status": "ok",
        "backup": "none",
        "content_type": "data",
        "shareable": False,
        "wipe_after_delete": False,
        "volumes": [{"id": _id(), "format": fmt}],
        "created": created,
        "lazy": True,
    }
    engine.store["disks"][disk_id] = disk
    return disk


# The `large` estate (issue 22): a site of the size Storware and Veeam quote for one manager.
LARGE = {"data_centers": 4, "clusters": 20, "hosts": 60, "storage_domains": 30, "vms": 5000, "disks": 12000, "tags": 20}


def seed_large(engine) -> None:
    """5,000 VMs with 12,000 thin disks (two each, a third on two VMs in five) over 4 data centers,
    20 clusters of 3 hosts and 30 NFS/GlusterFS data domains; every VM down, every disk a record
    until read. Started in seconds: one JSON document, no image file, no qemu."""
    seed_base(engine)
    store = engine.store
    n_dc = LARGE["data_centers"]
    dcs = [{"id": DEMO_DC if d == 0 else _id(), "name": f"dc{d + 1:02d}", "description": ""} for d in range(n_dc)]
    for dc in dcs:
        store["datacenters"][dc["id"]] = dc
    clusters = []
    for c in range(LARGE["clusters"]):
        cluster = {
            "id": _id(),
            "name": f"cluster{c + 1:02d}",
            "dc_id": dcs[c % n_dc]["id"],
            "cpu_type": "Intel Cascadelake Server Family",
        }
        store["clusters"][cluster["id"]] = cluster
        clusters.append(cluster)
    for h in range(LARGE["hosts"]):
        host = {
            "id": _id(),
            "name": f"host{h + 1:02d}",
            "address": f"host{h + 1:02d}.example.internal",
            "cluster_id": clusters[h % len(clusters)]["id"],
            "status": "up",
            "spm": h < n_dc,  # one SPM per data center (hosts 1-4 are in clusters 1-4, one per DC)
            "ssh_port": 22,
            "versions": dict(HOST_VERSIONS),
        }
        store["hosts"][host["id"]] = host
    domains: dict[str, list[dict]] = {dc["id"]: [] for dc in dcs}
    for s in range(LARGE["storage_domains"]):
        dc = dcs[s % n_dc]
        gluster = s % 5 == 4
        sd = _storage_domain(
            engine,
            name=f"data{s + 1:02d}",
            dc_id=dc["id"],
            sd_type="data",
            storage_type="glusterfs" if gluster else "nfs",
            block=False,
            master=not domains[dc["id"]],
            capacity=4096 * GiB,
            address="gluster.example.internal" if gluster else "nfs.example.internal",
            export_path=f"/vmstore{s + 1:02d}" if gluster else None,
            vfs_type="glusterfs" if gluster else None,
        )
        domains[dc["id"]].append(sd)
    tags = []
    for t in range(LARGE["tags"]):
        tag = {"id": _id(), "name": f"tag{t + 1:02d}", "description": "", "parent": None}
        store["tags"][tag["id"]] = tag
        tags.append(tag)
    for n in range(LARGE["vms"]):
        cluster = clusters[n % len(clusters)]
        vm = engine._new_vm(vm_id=_id(), name=f"vm{n:05d}", cluster=cluster, os_type="rhel_9x64", memory=4 * GiB)
        vm["tags"] = [tags[n % len(tags)]["id"]] if n % 4 else []
        pool = domains[cluster["dc_id"]]
        sizes = (20 * GiB, 50 * GiB, 100 * GiB) if n % 5 < 2 else (20 * GiB, 50 * GiB)
        for d, size in enumerate(sizes):
            disk = _lazy_disk(
                engine,
                name=f"vm{n:05d}_disk{d + 1}",
                sd=pool[(n + d) % len(pool)],
                size=size,
                created=vm["creation_time"],
                fmt="cow" if d == 0 else "raw",
            )
            _attach(vm, disk, bootable=d == 0)
    engine.store.save()


def seed_two_data_centers(engine) -> None:
    """Two data centers, Default and Branch, each with a cluster, an up host, an NFS data domain, an
    export domain on its own directory of a node's staging share (exports/DC_NAME) and a stopped VM
    (web-default, web-branch) with a 16 MiB disk holding a pattern of its own."""
    seed_base(engine)
    store = engine.store
    for n, name in enumerate(("Default", "Branch")):
        dc = {"id": DEMO_DC if n == 0 else _id(), "name": name, "description": ""}
        store["datacenters"][dc["id"]] = dc
        cluster = _cluster_with_host(store, dc, name=f"{name}-1", host=f"host-{name.lower()}")
        data = _storage_domain(
            engine,
            name=f"data-{name.lower()}",
            dc_id=dc["id"],
            sd_type="data",
            storage_type="nfs",
            block=False,
            master=True,
        )
        _storage_domain(
            engine, name=f"export-{name.lower()}", dc_id=dc["id"], sd_type="export", storage_type="nfs", block=False
        )
        vm = engine._new_vm(
            vm_id=_id(),
            name=f"web-{name.lower()}",
            cluster=cluster,
            os_type="debian_12",
            memory=GiB,
            cores=1,
            guest_agent=True,
            description=f"A VM of data center {name}",
        )
        disk = _disk(engine, name=f"web-{name.lower()}_os", sd=data, size=16 * MiB, fmt="cow", sparse=True)
        _write_pattern(engine, disk, [(0x60 + n, 0, MiB), (0x70 + n, 8 * MiB, MiB)])
        _attach(vm, disk, bootable=True)
    engine.store.save()


SEEDS = {"demo": seed_demo, "empty": seed_empty, "large": seed_large, "two-dcs": seed_two_data_centers}


def get_seed(name: str):
    """demo, empty, large, two-dcs, scale:N, or scale:N:C (N VMs over C clusters)."""
    if match := re.fullmatch(r"scale:(\d+)(?::([1-9]\d*))?", name):
        count, clusters = int(match[1]), int(match[2] or 1)
        return lambda engine: seed_scale(engine, count, clusters)
    if name not in SEEDS:
        raise ValueError(f"unknown seed {name!r}; choose demo, empty, large, scale:N or scale:N:CLUSTERS")
    return SEEDS[name]
