"""A point written back into an export storage domain, in the layout vdsm gives an exported VM, so
that an administrator imports it in the engine's own UI (or this restore imports it, when asked).

The export domain is the one attached to the VM's data center, on this node's staging share
(`EXPORT_STAGING_DIR/DC_NAME/SD_ID`). Each disk becomes one volume named by its original ids
(`images/DISK_ID/VOLUME_ID`, the volume the OVF names, with its vdsm `.meta`), in the disk's own
format; the OVF goes to `master/vms/VM_ID/VM_ID.ovf` last. Everything is written under temporary
names first and renamed into place once whole, owned by vdsm:kvm (36:36) as the hosts write there;
a copy of the VM the domain holds already is replaced only when asked, and only then."""

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

from core.cleanup import Cleanup
from core.qemu_img import ConvertError, convert
from inventory.models import DataCenter, StagingShare
from jobs.errors import JobError
from jobs.placement import ANYWHERE, Placement
from ovirt.exports import data_center_export_domain, exported_vm_ids, remove_exported_vm
from recovery.vdsm import make_owned_dir, own, volume_meta
from repository.manifest import ManifestDisk
from repository.models import BackupPoint
from repository.ovf import disk_volumes, without_disks
from repository.verify import awaited_problem
from strategies.export_domain.staging import staging_share

BLANK_UUID = "00000000-0000-0000-0000-000000000000"
QEMU_FORMATS = {"cow": "qcow2", "raw": "raw"}
IMPORT_APPEARS_WITHIN = 120  # seconds: the engine makes the imported VM as it accepts the import


def data_center_of(point: BackupPoint, wanted: str = "") -> DataCenter:
    """The data center whose export domain the point goes to: the one named, else the VM's."""
    if wanted:
        found = DataCenter.objects.filter(manager_id=point.vm.manager_id, name=wanted).first()
        if found is None:
            names = DataCenter.objects.filter(manager_id=point.vm.manager_id).values_list("name", flat=True)
            raise JobError(f"No data center named {wanted!r}; there are: {', '.join(sorted(names)) or 'none'}.")
        return found
    cluster = point.vm.cluster
    if cluster is None or cluster.data_center is None:
        raise JobError(f"VM {point.vm.name}'s data center is not known: name the data center to restore into.")
    return cluster.data_center


def export_restore_placement(job) -> Placement:
    """On the node that serves the data center's staging share, when one was recorded; else anywhere
    (the node it runs on must serve it, and says so if it does not)."""
    if job.vm is None:
        return ANYWHERE
    wanted = job.params.get("data_center") or ""
    shares = StagingShare.objects.filter(data_center__manager_id=job.vm.manager_id)
    if wanted:
        staged = shares.filter(data_center__name=wanted).first()
    elif job.vm.cluster is not None and job.vm.cluster.data_center_id is not None:
        staged = shares.filter(data_center_id=job.vm.cluster.data_center_id).first()
    else:
        staged = None
    if staged is None:
        return ANYWHERE
    return Placement(node=staged.node_id, says=f"serves the staging share {staged.share}")


def write_into_export_domain(
    *,
    job,
    conn,
    point: BackupPoint,
    entries: list[ManifestDisk],
    ovf: str,
    stored_problem: Callable[[ManifestDisk], Future],
    cleanup: Cleanup,
) -> dict:
    """Write the point's `entries` and OVF into the data center's export domain. `stored_problem(entry)`
    starts checking the stored files the entry is read from against their checksums (what differs,
    or ""), while its volume is written: a mismatch fails the restore before anything is in place."""
    params = job.params
    dc = data_center_of(point, params.get("data_center", ""))
    domain = data_center_export_domain(conn, str(dc.engine_id))
    if domain is None:
        raise JobError(f"No export domain is attached to data center {dc.name}.")
    root = staging_share(dc.name) / domain.id
    if not (root / "dom_md" / "metadata").is_file():
        raise JobError(
            f"Export domain {domain.name} of data center {dc.name} is not on this node's staging share "
            f"{staging_share(dc.name)}: run the restore on the node that serves it."
        )
    vm_id = str(point.vm.engine_id)
    held = vm_id in exported_vm_ids(conn, domain.id)
    if held and not params.get("replace"):
        raise JobError(
            f"Export domain {domain.name} holds a copy of VM {point.vm.name} already; a restore replaces it only "
            "when asked (replace)."
        )
    volumes = disk_volumes(ovf)
    missing = [e.alias for e in entries if e.disk_id not in volumes]
    if missing:
        raise JobError(f"The point's OVF names no volume for disk {missing[0]}; it cannot be exported as it is.")
    total = sum(e.virtual_size for e in entries)
    job.set_progress(0, total)
    staged: list[tuple[Path, Path]] = []  # (temporary image directory, its final place)
    done = 0
    for entry in entries:
        job.check_cancel()
        stored = stored_problem(entry)
        temp = root / "images" / f".restore-{job.pk}-{entry.disk_id}"
        cleanup.add(f"remove the unfinished image of disk {entry.alias}", lambda t=temp: shutil.rmtree(t, True))
        make_owned_dir(temp)
        volume = temp / volumes[entry.disk_id]
        _convert(
            point.directory.path / entry.file,
            entry.format,
            volume,
            QEMU_FORMATS[entry.disk_format],
            preallocated=not entry.sparse,
            progress=lambda n, base=done: job.set_progress(base + n),
            check=job.check_cancel,
        )
        own(volume, 0o660)
        problem = awaited_problem(stored, job)
        if problem:
            raise JobError(f"The backup is damaged: {problem} Nothing was written into the export domain.")
        meta = volume.with_name(volume.name + ".meta")
        meta.write_text(_volume_meta(entry, domain_id=domain.id, volume=volume))
        own(meta, 0o660)
        staged.append((temp, root / "images" / entry.disk_id))
        done += entry.virtual_size
        job.log("info", f"Disk {entry.alias} written into export domain {domain.name} ({entry.disk_id})")
    if held:
        remove_exported_vm(conn, domain.id, vm_id, name=point.vm.name, job=job)
        job.log("warning", f"Replaced the copy of VM {point.vm.name} export domain {domain.name} held, as asked")
    for temp, final in staged:
        if final.exists():  # an image of the same disk no exported VM names (a failed export's)
            shutil.rmtree(final)
        temp.rename(final)
    vm_dir = root / "master" / "vms" / vm_id
    make_owned_dir(vm_dir)
    text = without_disks(ovf, keep={e.disk_id for e in entries})
    temp_ovf = vm_dir / f".{vm_id}.ovf.{job.pk}"
    with open(temp_ovf, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    own(temp_ovf, 0o644)
    temp_ovf.rename(vm_dir / f"{vm_id}.ovf")  # last: the engine lists the VM from its OVF
    cleanup.commit()
    job.set_progress(total, total)
    job.log(
        "info",
        f"Backup {point.pk} written into export domain {domain.name} of data center {dc.name} as VM "
        f"{point.vm.name} ({vm_id}): import it from the domain's VM Import tab",
    )
    result = {"export_domain": domain.id, "exported_vm": vm_id}
    if params.get("import"):
        result.update(_import(conn, job=job, domain=domain, vm_id=vm_id, cleanup=cleanup))
    return result


def _import(conn, *, job, domain: types.StorageDomain, vm_id: str, cleanup: Cleanup) -> dict:
    """Import the VM just written, as a clone (new ids: the original may still exist) under the name,
    into the cluster and data domain asked for; waits until the engine has copied its disks."""
    params = job.params
    name = params["name"]
    exported = conn.system_service().storage_domains_service().storage_domain_service(domain.id).vms_service()
    try:
        exported.vm_service(vm_id).import_(
            cluster=types.Cluster(name=params["cluster"]) if params.get("cluster") else None,
            storage_domain=types.StorageDomain(name=params["storage_domain"]),
            clone=True,
            vm=types.Vm(name=name),
            query={"collapse_snapshots": "true"},  # the engine reads it from the URL only
        )
    except sdk.Error as e:
        raise JobError(f"The engine refused to import VM {name} from export domain {domain.name}: {e}") from None
    vms = conn.system_service().vms_service()
    # The engine makes the VM when it accepts the import (locked while its disks are copied) and
    # removes it when the import fails.
    started, seen = time.monotonic(), False
    while True:
        found = [v for v in vms.list(search=f"name={name}") if v.name == name]
        if found and found[0].status == types.VmStatus.DOWN:
            break
        if seen and not found or not seen and time.monotonic() - started > IMPORT_APPEARS_WITHIN:
            raise JobError(
                f"The engine failed to import VM {name} from export domain {domain.name} (see its events); what "
                "was written into the export domain stays there, to import by hand."
            )
        seen = seen or bool(found)
        if time.monotonic() - started > 24 * 3600:
            raise JobError(f"The import of VM {name} did not end within a day.")
        job.beat()
        time.sleep(1)
    job.log("info", f"Imported VM {name} ({found[0].id}) from export domain {domain.name}")
    return {"vm_id": found[0].id, "vm_name": name}


def _volume_meta(entry: ManifestDisk, *, domain_id: str, volume: Path) -> str:
    """vdsm's metadata of a volume with no parent (storage format V5 keys, sorted, ended by EOF)."""
    fields = {
        "CAP": str(entry.virtual_size),
        "CTIME": str(int(volume.stat().st_mtime)),
        "DESCRIPTION": json.dumps({"DiskAlias": entry.alias, "DiskDescription": ""}),
        "DISKTYPE": "DATA",
        "DOMAIN": domain_id,
        "FORMAT": "COW" if entry.disk_format == "cow" else "RAW",
        "GEN": "0",
        "IMAGE": entry.disk_id,
        "LEGALITY": "LEGAL",
        "PUUID": BLANK_UUID,
        "TYPE": "SPARSE" if entry.sparse else "PREALLOCATED",
        "VOLTYPE": "LEAF",
    }
    return volume_meta(fields)


def _convert(source: Path, source_format: str, target: Path, fmt: str, *, preallocated: bool, progress, check) -> None:
    """The guest-visible content of the stored chain into one volume of the disk's format, flushed."""
    options = ["-o", "preallocation=falloc"] if preallocated else []
    try:
        convert(source, source_format, target, fmt, options=options, progress=progress, check=check)
    except ConvertError as e:
        raise JobError(f"Writing {target} failed: {e}") from None
    with open(target, "rb+") as f:
        os.fsync(f.fileno())
