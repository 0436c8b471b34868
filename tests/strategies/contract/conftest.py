"""What the strategy contract runs on: a VM of the test's own on the demo engine, and the strategies
that must keep the contract (every implemented one in the registry)."""

import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import ovirtsdk4 as sdk
import ovirtsdk4.types as types
import pytest

from strategies.registry import all_strategies
from tests.helpers import disks_of
from tests.ovirtsim.helpers import add_disk, wait_for

MiB = 1024**2

# The contract VM's disks: (key, size, format, sparse, storage domain, incremental backup). A thin
# QCOW2 that tracks changes on a file domain, a preallocated RAW on a block domain (LVs to activate
# and leave as found), and a small one every backup of the contract excludes.
DISKS = [
    ("os", 32 * MiB, "cow", True, "data-nfs", "incremental"),
    ("data", 16 * MiB, "raw", False, "data-block", "none"),
    ("skip", 8 * MiB, "cow", True, "data-nfs", "none"),
]
EXCLUDED = "skip"
# The os disk holds a partition table and, in partition 1 (12 to 16 MiB, which no case writes
# patterns into), an ext4 filesystem with a file the guest changes between backups: file-level
# restore reads it back from every strategy's points as it was in each.
FS_OFFSET, FS_SIZE = 12 * MiB, 4 * MiB
FILE_PATH = "etc/app/settings.conf"
FILE_VERSIONS = [b"version = 1\nmode = full\n" * 100, b"version = 2\nmode = incr\n" * 100]


def filesystem_image(files: dict[str, bytes]) -> bytes:
    """An ext4 filesystem of FS_SIZE holding `files`, made the same way each time (UUID, hash seed,
    clock): two versions differ only where their files do."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        for path in [root, *root.rglob("*")]:
            os.utime(path, (1767225600, 1767225600))
        image = Path(tmp) / "fs.img"
        uid = "2d1b8a1e-3f0c-4c2a-9a55-6f1e8e0b7c11"
        options = ["-b", "1024", "-L", "contractfs", "-U", uid, "-E", f"hash_seed={uid},root_owner=0:0"]
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", *options, "-d", str(root), str(image), str(FS_SIZE // 1024)],
            check=True,
            capture_output=True,
            env=os.environ | {"E2FSPROGS_FAKE_TIME": "1767225600"},
        )
        return image.read_bytes()


def partition_table() -> bytes:
    """The first sector of a disk with an MBR whose partition 1 is the filesystem's place."""
    with tempfile.NamedTemporaryFile() as disk:
        disk.truncate(32 * MiB)
        script = f"label: dos\nlabel-id: 0x0c0ffee0\n{FS_OFFSET // 512},{FS_SIZE // 512},83\n"
        subprocess.run(["sfdisk", "-q", disk.name], input=script.encode(), check=True, capture_output=True)
        return Path(disk.name).read_bytes()[:512]


def implemented_strategies() -> list[str]:
    """Every strategy of the registry that is implemented: a new one joins the contract by setting
    `implemented = True`, nothing else."""
    return [name for name, cls in all_strategies().items() if cls.implemented]


def pytest_generate_tests(metafunc):
    if "strategy" in metafunc.fixturenames:
        metafunc.parametrize("strategy", implemented_strategies())


class Guest:
    """A running VM of the test's own, and what its disks hold as the guest last wrote them (the
    reference a point's disks are compared with)."""

    def __init__(self, sim, conn, vm_id: str, name: str, disks: dict[str, types.Disk]):
        self.sim, self.conn, self.vm_id, self.name, self.disks = sim, conn, vm_id, name, disks
        self.content = {key: bytearray(d.provisioned_size) for key, d in disks.items()}

    def alias(self, key: str) -> str:
        return f"{self.name}_{key}"

    def write(self, key: str, offset: int, pattern: int, length: int) -> None:
        self.write_bytes(key, offset, bytes([pattern]) * length)

    def write_bytes(self, key: str, offset: int, data: bytes) -> None:
        self.sim.guest_write(self.disks[key].id, offset, data)
        self.content[key][offset : offset + len(data)] = data

    def write_file(self, version: bytes) -> None:
        """The guest's file FILE_PATH of the filesystem on its os disk's partition 1 now holds
        `version`: the blocks of the filesystem that differ are written, as the guest would."""
        new = filesystem_image({FILE_PATH: version})
        old = bytes(self.content["os"][FS_OFFSET : FS_OFFSET + len(new)])
        block = 4096
        for at in range(0, len(new), block):
            if new[at : at + block] != old[at : at + block]:
                self.write_bytes("os", FS_OFFSET + at, new[at : at + block])

    def save(self, tmp_path: Path, tag) -> dict[str, Path]:
        """The reference copy of every disk now, as raw files, by alias."""
        found = {}
        for key, data in self.content.items():
            found[self.alias(key)] = tmp_path / f"expected-{tag}-{key}.raw"
            found[self.alias(key)].write_bytes(bytes(data))
        return found

    @property
    def service(self):
        return self.conn.system_service().vms_service().vm_service(self.vm_id)

    def status(self) -> types.VmStatus:
        return self.service.get().status

    def wait_status(self, status: types.VmStatus) -> None:
        wait_for(lambda: self.status() == status, timeout=60, what=f"VM {self.name} to be {status.value}")


def make_vm(conn, name: str) -> types.Vm:
    """A VM in cluster Production (host1 runs it) with the contract's disks attached, in that order."""
    vms = conn.system_service().vms_service()
    vm = vms.add(types.Vm(name=name, cluster=types.Cluster(name="Production")))
    service = vms.vm_service(vm.id)
    for key, size, fmt, sparse, sd, backup in DISKS:
        disk = add_disk(conn, name=f"{name}_{key}", size=size, fmt=fmt, sparse=sparse, sd_name=sd, backup=backup)
        service.disk_attachments_service().add(
            types.DiskAttachment(
                disk=types.Disk(id=disk.id), interface=types.DiskInterface.VIRTIO_SCSI, bootable=False, active=True
            )
        )
    return vm


def drop_vm(conn, vm_id: str) -> None:
    service = conn.system_service().vms_service().vm_service(vm_id)
    try:
        if service.get().status != types.VmStatus.DOWN:
            service.stop()
            wait_for(lambda: service.get().status == types.VmStatus.DOWN, timeout=60, what="the VM to stop")
        service.remove(detach_only=False)
    except sdk.NotFoundError:
        pass


@pytest.fixture
def guest(ssh_manager, demo_sim):
    """The contract VM, running, its disks holding data the guest wrote (known to the test)."""
    from inventory.sync import sync_manager

    name = f"contract-{uuid.uuid4().hex[:8]}"
    with demo_sim.connect() as conn:
        vm = make_vm(conn, name)
        try:
            disks = {alias.removeprefix(f"{name}_"): d for alias, d in disks_of(conn, vm.id).items()}
            found = Guest(demo_sim, conn, vm.id, name, disks)
            found.write("os", 0, 0x11, 12 * MiB)
            found.write_bytes("os", 0, partition_table())
            found.write_bytes("os", FS_OFFSET, filesystem_image({FILE_PATH: FILE_VERSIONS[0]}))
            found.write("os", 16 * MiB, 0x12, 4 * MiB)
            found.write("data", 0, 0x21, 6 * MiB)
            found.write("skip", 0, 0x31, MiB)
            found.service.start()
            found.wait_status(types.VmStatus.UP)
            sync_manager(ssh_manager)
            yield found
        finally:
            drop_vm(conn, vm.id)
