"""Disk attachment: snapshot disks attached to a proxy VM in the VM's cluster and read there as
block devices. Full backups only. Not implemented yet."""

from strategies.base import Strategy


class DiskAttachmentStrategy(Strategy):
    name = "disk_attachment"
    label = "Disk attachment (proxy VM)"
    min_api_version = (4, 0)
    implemented = False
