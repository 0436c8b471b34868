"""The node's staging share for export domains: one directory per data center, served over NFS by
the node's exporter (jobs.nfs), which the data center's export domain is created on."""

from pathlib import Path

from django.conf import settings

from jobs.nfs import Export, NfsError, node_exporter


def staging_share(data_center: str) -> Path:
    """The directory of this node's staging share that the data center's export domain is on."""
    return Path(settings.EXPORT_STAGING_DIR) / data_center


def staging_pseudo(data_center: str) -> str:
    """The path hosts mount: the directory's own, as an NFS server exporting it by path offers it."""
    return str(staging_share(data_center))


def serve_staging_share(*, data_center: str, clients: list[str]) -> Export:
    """Make the data center's staging directory (the hosts' vdsm:kvm own it) and serve it over NFS;
    one served already is returned as it is."""
    directory = staging_share(data_center)
    exporter = node_exporter()
    exporter.start()
    for export in exporter.exports():
        if export.directory == directory:
            return export
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NfsError(f"The staging directory {directory} cannot be made: {e.strerror}.") from None
    return exporter.export(directory=directory, pseudo=staging_pseudo(data_center), clients=clients)


def unserve_staging_share(*, data_center: str) -> Export | None:
    """Stop serving the data center's staging directory (its files stay); None if it was not served."""
    directory = staging_share(data_center)
    exporter = node_exporter()
    for export in exporter.exports():
        if export.directory == directory:
            exporter.unexport(export)
            return export
    return None
