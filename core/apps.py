from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        import core.audit  # records logins, logouts and failed logins (its signal receivers)
        import core.checks  # noqa: F401  (registers the system checks)
