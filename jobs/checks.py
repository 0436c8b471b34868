from django.conf import settings
from django.core.checks import Error, register


@register()
def check_node_settings(app_configs, **kwargs):
    """A node beats every NODE_HEARTBEAT seconds: NODE_LOST_AFTER must leave room for a few missed
    beats, or busy nodes are taken for lost and their jobs failed."""
    errors = []
    if settings.NODE_HEARTBEAT < 1:
        errors.append(
            Error(f"NODE_HEARTBEAT is {settings.NODE_HEARTBEAT}: it must be 1 second or more.", id="jobs.E001")
        )
    elif settings.NODE_LOST_AFTER < 3 * settings.NODE_HEARTBEAT:
        errors.append(
            Error(
                f"NODE_LOST_AFTER is {settings.NODE_LOST_AFTER}: it must be at least three heartbeats "
                f"(3 x NODE_HEARTBEAT = {3 * settings.NODE_HEARTBEAT} seconds).",
                id="jobs.E002",
            )
        )
    return errors


@register()
def check_nfs_settings(app_configs, **kwargs):
    """The node's NFS exporter (jobs.nfs): a site's own server needs both its commands; NFS_NETNS is
    where the node's own Ganesha serves, an absolute path (a namespace made later is fine: Ganesha
    says so when it starts without it)."""
    errors = []
    if not 0 <= settings.NFS_PORT <= 65535:
        errors.append(
            Error(f"NFS_PORT is {settings.NFS_PORT}: give a port from 1 to 65535 (0: a free one).", id="jobs.E003")
        )
    if settings.NFS_EXPORTER == "command":
        for name in ("NFS_EXPORT_COMMAND", "NFS_UNEXPORT_COMMAND"):
            if not getattr(settings, name).strip():
                errors.append(
                    Error(
                        f"NFS_EXPORTER is command but {name} is empty: give the site's command, with {{path}}, "
                        "{clients} and {options} where they go.",
                        id="jobs.E004",
                    )
                )
    if settings.NFS_NETNS and (settings.NFS_EXPORTER != "ganesha" or not settings.NFS_NETNS.startswith("/")):
        errors.append(
            Error(
                f"NFS_NETNS is {settings.NFS_NETNS!r}: it is the absolute path of a network namespace's file that "
                "the node's NFS-Ganesha serves in (NFS_EXPORTER=ganesha); unset it otherwise.",
                id="jobs.E005",
            )
        )
    return errors
