from django.apps import AppConfig


class RepositoryConfig(AppConfig):
    name = "repository"

    def ready(self) -> None:
        from jobs.runner import register_handler
        from repository.retention import RETENTION, abandon_prune, run_prune
        from repository.verify import VERIFY, run_verify

        register_handler(VERIFY, run_verify, label="Verify")
        register_handler(RETENTION, run_prune, label="Retention", on_abandoned=abandon_prune)
