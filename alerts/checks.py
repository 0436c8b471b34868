from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured


@register()
def check_webhook_allow_list(app_configs, **kwargs):
    """A mistyped ALERT_WEBHOOK_ALLOW stops the service at start, not the first alert."""
    from alerts.validators import allow_list

    try:
        allow_list()
    except ImproperlyConfigured as e:
        return [Error(str(e), id="alerts.E001")]
    return []
