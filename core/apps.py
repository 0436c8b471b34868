from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_in
        from django.db.models.signals import post_save

        import core.audit  # records logins, logouts and failed logins (its signal receivers)
        import core.checks  # noqa: F401  (registers the system checks)
        from core.logins import forget_own_failures
        from core.tokens import revoke_tokens_of_deactivated_user

        user_logged_in.connect(forget_own_failures, dispatch_uid="core-forget-own-failures")
        post_save.connect(
            revoke_tokens_of_deactivated_user, sender=get_user_model(), dispatch_uid="core-revoke-tokens-of-inactive"
        )
