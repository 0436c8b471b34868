from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import post_migrate, post_save

        import core.audit  # records logins, logouts and failed logins (its signal receivers)
        import core.checks  # noqa: F401  (registers the system checks)
        from core.logins import forget_own_failures
        from core.tokens import revoke_tokens_of_deactivated_user

        user_logged_in.connect(forget_own_failures, dispatch_uid="core-forget-own-failures")
        post_migrate.connect(record_site_checks, sender=self, dispatch_uid="core-record-site-checks")
        post_save.connect(
            revoke_tokens_of_deactivated_user, sender=get_user_model(), dispatch_uid="core-revoke-tokens-of-inactive"
        )


def record_site_checks(sender, *, using: str, verbosity: int = 1, **kwargs) -> None:
    """After a migrate: the check values of the keys, if the site has none yet, and the version of
    the code that migrated it (core.site says why here)."""
    from django.conf import settings

    from core.site import record_key_checks, record_site_version, tables_exist

    if not tables_exist(using):  # migrated back below the tables
        return
    written = record_key_checks(node_name=settings.NODE_NAME, using=using)
    if written and verbosity:
        print(f"Recorded the check values of this site's {' and '.join(written)} (the keys themselves are not stored).")
    record_site_version(node_name=settings.NODE_NAME, using=using)
