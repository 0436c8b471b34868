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
