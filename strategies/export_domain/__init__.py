"""Export storage domain (legacy): the VM, or a clone of its snapshot, exported to an export
storage domain whose share the node reads. Full backups only. Not implemented yet."""

from strategies.base import Strategy


class ExportDomainStrategy(Strategy):
    name = "export_domain"
    label = "Export storage domain"
    min_api_version = (4, 0)
    deprecated = True
    implemented = False
