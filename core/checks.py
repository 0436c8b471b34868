from django.conf import settings
from django.core.checks import Error, Tags, register

from core.secrets import missing_key_message, missing_keys


@register()
def check_keys(app_configs, **kwargs):
    """Every management command that runs the checks (runserver, migrate, qcluster...) stops here."""
    return [Error(missing_key_message(name), id="core.E001") for name in missing_keys()]


@register()
def check_token_days(app_configs, **kwargs):
    from core.tokens import MAX_DAYS

    if not 0 <= settings.API_TOKEN_DAYS <= MAX_DAYS:
        return [
            Error(
                f"API_TOKEN_DAYS is {settings.API_TOKEN_DAYS}: it must be 1 to {MAX_DAYS} days, or 0 for tokens "
                "that do not expire.",
                id="core.E002",
            )
        ]
    return []


@register(Tags.database)
def check_keys_are_the_sites(app_configs, databases=None, **kwargs):
    """`migrate` (the first step of `make worker`) stops here, before it touches the schema, when this
    node's keys are not those the site's database was made with (core.site)."""
    from django.db import DEFAULT_DB_ALIAS

    from core.site import key_problems, tables_exist

    if not databases or DEFAULT_DB_ALIAS not in databases or missing_keys() or not tables_exist():
        return []
    return [Error(problem, id="core.E003") for problem in key_problems()]
