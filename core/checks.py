from django.core.checks import Error, register

from core.secrets import missing_key_message, missing_keys


@register()
def check_keys(app_configs, **kwargs):
    """Every management command that runs the checks (runserver, migrate, qcluster...) stops here."""
    return [Error(missing_key_message(name), id="core.E001") for name in missing_keys()]
