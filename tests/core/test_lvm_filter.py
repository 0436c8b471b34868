"""A proxy node's LVM filter, read with lvmconfig from a temporary LVM_SYSTEM_DIR (never the machine's
/etc/lvm) and judged as LVM judges a device: attached disks hidden, or the check fails with the fix."""

import pytest

from core.lvm_filter import lvm_filter_problem, read_lvm_config

HIDDEN = ""


@pytest.fixture
def lvm_dir(tmp_path, monkeypatch):
    directory = tmp_path / "lvm"
    directory.mkdir()
    monkeypatch.setenv("LVM_SYSTEM_DIR", str(directory))

    def configure(devices: str):
        (directory / "lvm.conf").write_text(f"devices {{\n{devices}\n}}\n")
        return read_lvm_config()

    configure.directory = directory
    return configure


@pytest.mark.parametrize(
    ("devices", "interface", "hidden"),
    [
        ("", "virtio_scsi", False),  # LVM's default: every device
        ('filter = [ "a|.*|" ]', "virtio", False),
        ('global_filter = [ "r|^/dev/disk/by-id/virtio-.*|", "r|^/dev/disk/by-id/scsi-0QEMU.*|" ]', "virtio", True),
        ('global_filter = [ "r|^/dev/disk/by-id/virtio-.*|" ]', "virtio_scsi", False),  # not the SCSI names
        ('filter = [ "a|^/dev/vda2$|", "r|.*|" ]', "virtio_scsi", True),  # only the node's own disk
        ('filter = [ "a|^/dev/vd.*|", "r|.*|" ]', "virtio", False),  # every VirtIO disk, attached ones too
        ('filter = [ "a|.*|", "r|virtio|" ]', "virtio", False),  # /dev/vdq is accepted first
    ],
)
def test_it_judges_whether_the_filter_hides_attached_disks(lvm_dir, devices, interface, hidden):
    problem = lvm_filter_problem(lvm_dir(devices), interface)
    if hidden:
        assert problem == HIDDEN
    else:
        assert problem.startswith("The node's LVM filter lets it see disks attached to the proxy (such as /dev/")
        assert 'set devices { global_filter = [ "r|^/dev/disk/by-id/virtio-.*|"' in problem


def test_it_trusts_a_devices_file_only_when_there_is_one(lvm_dir):
    config = lvm_dir("use_devicesfile = 1")
    assert "devicesfile_exists=0" in config and lvm_filter_problem(config) != HIDDEN
    (lvm_dir.directory / "devices").mkdir()
    (lvm_dir.directory / "devices" / "system.devices").write_text("VERSION=1.1.1\n")
    assert lvm_filter_problem(read_lvm_config()) == HIDDEN


def test_it_says_when_the_filter_could_not_be_read(tmp_path, monkeypatch):
    monkeypatch.setenv("LVM_SYSTEM_DIR", str(tmp_path / "missing"))
    problem = lvm_filter_problem(read_lvm_config())
    assert problem.startswith("The node's LVM filter could not be read (lvmconfig failed: ")
    assert "In /etc/lvm/lvm.conf on the node" in problem
    assert lvm_filter_problem("").startswith("The node has not reported its LVM filter")
