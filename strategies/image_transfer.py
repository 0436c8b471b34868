"""Disk image transfer: snapshot, download each disk snapshot through ovirt-imageio.

Full: every selected disk as a standalone QCOW2 (zero extents skipped by the client).
Incremental: only the layer made since the kept snapshot (`shallow=true`), written as a QCOW2
whose backing file is the previous point's image. The newest snapshot stays on the engine for
the next run; the one before it is removed (the engine merges it) once the new point is safe.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
from django.db import transaction
from django.utils import timezone
from ovirt_imageio import client

from inventory.models import Disk
from jobs.runner import JobError
from repository.models import BackupPoint, DiskBackup
from repository.storage import PointDir, atomic_write, checksum_file, free_bytes
from strategies.base import Strategy, register
from strategies.engine import (
    Cleanup,
    clean_leftovers,
    fault_text,
    remove_snapshot,
    snapshot_disk_images,
    tracked_transfer,
    vm_disks,
    vm_service,
    wait_for,
)

MiB = 1024**2


@register
class ImageTransferStrategy(Strategy):
    name = "image_transfer"
    supports_incremental = True

    def backup(self) -> BackupPoint:
        req, job, conn = self.request, self.job, self.connection
        vm_id = str(req.vm.engine_id)
        try:
            vm_service(conn, vm_id).get()
        except sdk.NotFoundError:
            raise JobError(f"VM {req.vm.name} ({vm_id}) no longer exists on the engine.") from None
        previous = BackupPoint.objects.latest_with_snapshot(req.vm, req.destination, self.name)
        clean_leftovers(conn, vm_id, keep={previous.engine_snapshot_id} if previous else set(), job=job)

        disks = self._settled_disks(vm_id)
        if not disks:
            raise JobError(f"Every disk of VM {req.vm.name} is excluded: there is nothing to back up.")
        for d in disks:
            if d.status != types.DiskStatus.OK:
                raise JobError(f"Disk {d.alias} is {d.status.value} on the engine; a backup cannot start over it.")
        if req.excluded:
            job.log("info", f"Excluded disks: {', '.join(sorted(req.excluded))}")

        parent, note = None, ""
        if req.type in ("incremental", "auto") and previous is not None:
            reason = self._incremental_blocker(previous, disks)
            if reason:
                note = f"Full backup instead of incremental: {reason}"
                job.log("warning", note)
            else:
                parent = previous
        elif req.type == "incremental":
            note = "Full backup instead of incremental: there is no earlier backup with a kept snapshot."
            job.log("warning", note)

        total = sum(d.provisioned_size for d in disks)
        needed = (sum(d.actual_size or 0 for d in disks) if parent is None else total // 10) + 16 * MiB
        free = free_bytes(req.destination.path)
        if free < needed:
            raise JobError(
                f"Destination {req.destination.name} has {free // MiB} MiB free; this backup needs about "
                f"{needed // MiB} MiB. Nothing was written and older backups are untouched."
            )

        point = BackupPoint.objects.create(
            vm=req.vm,
            destination=req.destination,
            policy=req.policy,
            job=job,
            strategy=self.name,
            type=BackupPoint.Type.INCREMENTAL if parent else BackupPoint.Type.FULL,
            parent=parent,
            note=note,
        )
        job.set_progress(0, total)
        job.log("info", f"{point.get_type_display()} backup of {len(disks)} disk(s), {total // MiB} MiB virtual")
        pdir = PointDir(Path(req.destination.path), vm_id, str(point.uuid))
        with Cleanup(job) as cleanup:
            cleanup.add(
                "mark the point failed",
                lambda: BackupPoint.objects.filter(pk=point.pk, status=BackupPoint.Status.RUNNING).update(
                    status=BackupPoint.Status.FAILED, finished=timezone.now()
                ),
            )
            pdir.create()
            drop_dir = cleanup.add("remove the unfinished backup directory", pdir.remove)
            snapshot, consistency = self.take_snapshot(description=f"job {job.pk}")
            drop_new = cleanup.add(
                "remove the new snapshot", lambda: remove_snapshot(conn, vm_id, snapshot.id, job=job)
            )
            images = snapshot_disk_images(conn, vm_id, snapshot.id)
            ovf = self._ovf(vm_id, snapshot.id)
            atomic_write(pdir.path / "vm.ovf", ovf.encode())

            records, done, read = [], 0, 0
            # Each file is hashed while the engine finalizes its transfer (and the next disk moves).
            hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
            cleanup.add("stop the checksum thread", lambda: hasher.shutdown(cancel_futures=True))
            digests = {}

            def hash_later(disk_id: str, part: Path) -> None:
                digests[disk_id] = hasher.submit(checksum_file, open(part, "rb"))  # noqa: SIM115

            for disk in disks:
                job.check_cancel()
                name = f"{disk.id}.qcow2"
                parent_record = parent.disks.filter(disk__engine_id=disk.id).first() if parent else None
                backing = f"../{parent.uuid}/{disk.id}.qcow2" if parent_record else None
                read += self._download(
                    disk,
                    images[disk.id],
                    pdir.part(name),
                    backing,
                    base=done,
                    total=total,
                    on_complete=lambda part, disk_id=disk.id: hash_later(disk_id, part),
                )
                final = pdir.commit(name)
                done += disk.provisioned_size
                records.append((disk, final, parent_record))
                job.log("info", f"Disk {disk.alias}: {final.stat().st_blocks * 512 // MiB} MiB stored")

            manifest_disks, stored = [], 0
            for disk, path, parent_record in records:
                digest = digests[disk.id].result()
                size = path.stat().st_blocks * 512
                stored += size
                manifest_disks.append(
                    {
                        "disk_id": disk.id,
                        "alias": disk.alias,
                        "file": path.name,
                        "format": "qcow2",
                        "virtual_size": disk.provisioned_size,
                        "stored_size": size,
                        "checksum": digest,
                        "disk_format": disk.format.value,
                        "sparse": bool(disk.sparse),
                        "backup_enabled": disk.backup == types.DiskBackup.INCREMENTAL,
                        "storage_domain_id": disk.storage_domains[0].id if disk.storage_domains else None,
                        "parent_file": f"../{parent.uuid}/{path.name}" if parent_record else None,
                    }
                )
            pdir.write_manifest(
                {
                    "vm_id": vm_id,
                    "vm_name": req.vm.name,
                    "backup_id": str(point.uuid),
                    "strategy": self.name,
                    "type": point.type,
                    "parent_backup_id": str(parent.uuid) if parent else None,
                    "engine_snapshot_id": snapshot.id if req.keep_snapshot else None,
                    "consistency": consistency,
                    "created": point.started.isoformat(),
                    "ovf": "vm.ovf",
                    "disks": manifest_disks,
                    "checksum_algorithm": "sha256 of each stored file",
                }
            )
            cleanup.discard(drop_dir)
            with transaction.atomic():
                for (disk, path, parent_record), entry in zip(records, manifest_disks, strict=True):
                    DiskBackup.objects.create(
                        point=point,
                        disk=self._inventory_disk(disk),
                        file=pdir.relative(path.name),
                        virtual_size=disk.provisioned_size,
                        stored_size=entry["stored_size"],
                        parent=parent_record,
                        checksum=entry["checksum"],
                    )
                point.status = BackupPoint.Status.COMPLETE
                point.finished = timezone.now()
                point.bytes_transferred = read or done
                point.bytes_stored = stored
                point.ovf_path = pdir.relative("vm.ovf")
                point.consistency = consistency
                point.engine_snapshot_id = snapshot.id if req.keep_snapshot else ""
                point.save()
            if req.keep_snapshot:
                cleanup.discard(drop_new)
        job.set_progress(total, total)
        if previous is not None and previous.engine_snapshot_id:
            # The new point is safe, so the older snapshot is no longer needed. The engine merges it in
            # the background; the next run waits for a busy disk and refuses an illegal one.
            try:
                remove_snapshot(conn, vm_id, previous.engine_snapshot_id, job=job, wait=False)
                BackupPoint.objects.filter(pk=previous.pk).update(engine_snapshot_id="")
                job.log("info", f"Removing the snapshot kept by backup {previous.pk} (the engine merges it)")
            except (JobError, sdk.Error) as e:
                job.log("error", f"The backup is complete, but removing the older snapshot failed: {fault_text(e)}")
        return point

    def _settled_disks(self, vm_id: str) -> list[types.Disk]:
        """The selected disks once the engine no longer holds them locked (a merge from the last run)."""
        req, job = self.request, self.job
        said = set()

        def ready():
            disks = [
                d for d in vm_disks(self.connection, vm_id) if d.id not in req.excluded and d.alias not in req.excluded
            ]
            locked = [d.alias for d in disks if d.status == types.DiskStatus.LOCKED]
            for alias in set(locked) - said:
                job.log("info", f"Waiting for the engine to release disk {alias} (locked)")
                said.add(alias)
            return None if locked else (disks or [None])

        disks = [d for d in wait_for(ready, what="the VM's disks to be unlocked", timeout=3600, job=job) if d]
        return disks

    def _incremental_blocker(self, previous: BackupPoint, disks: list[types.Disk]) -> str:
        conn, vm_id = self.connection, str(self.request.vm.engine_id)
        snapshots = vm_service(conn, vm_id).snapshots_service().list()
        kept = next((s for s in snapshots if s.id == previous.engine_snapshot_id), None)
        if kept is None:
            return f"the snapshot kept by backup {previous.pk} was deleted on the engine."
        later = [
            s
            for s in snapshots
            if s.snapshot_type == types.SnapshotType.REGULAR and s.date and kept.date and s.date > kept.date
        ]
        if later:
            return f"snapshot '{later[0].description}' was taken after the kept one, so the chain changed."
        before = {str(r.disk.engine_id): r.virtual_size for r in previous.disks.select_related("disk")}
        if set(before) != {d.id for d in disks}:
            return "the VM's disks changed (a disk was added, removed or excluded) since the last backup."
        extended = [d.alias for d in disks if before[d.id] != d.provisioned_size]
        if extended:
            return f"disk {extended[0]} was extended since the last backup."
        return ""

    def _ovf(self, vm_id: str, snapshot_id: str) -> str:
        service = vm_service(self.connection, vm_id)
        snap = service.snapshots_service().snapshot_service(snapshot_id).get(query={"all_content": "true"})
        config = snap.initialization.configuration if snap.initialization else None
        if config is None or not config.data:
            config = service.get(all_content=True).initialization.configuration
        return config.data

    def _download(
        self, disk, image_id: str, dest, backing: str | None, *, base: int, total: int, on_complete=None
    ) -> int:
        """Download one disk snapshot; returns the bytes the engine reports were read."""
        conn = self.connection
        with tracked_transfer(
            conn,
            snapshot_id=image_id,
            shallow=backing is not None,
            job=self.job,
            base=base,
            total=total,
            what=f"downloading disk {disk.alias}",
        ) as (handle, progress):
            client.download(
                handle.transfer.transfer_url,
                str(dest),
                conn.ca_file,
                fmt="qcow2",
                secure=conn.verify_tls,
                progress=progress,
                proxy_url=handle.transfer.proxy_url,
                backing_file=backing,
                backing_format="qcow2" if backing else None,
            )
            if on_complete is not None:
                on_complete(dest)  # before the transfer is finalized, so both proceed at once
        return handle.transferred or 0

    def _inventory_disk(self, disk: types.Disk) -> Disk:
        row, _ = Disk.objects.get_or_create(
            manager=self.request.vm.manager,
            engine_id=disk.id,
            defaults={"name": disk.alias or disk.id, "vm": self.request.vm, "provisioned_size": disk.provisioned_size},
        )
        return row
