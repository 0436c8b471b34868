from django.apps import AppConfig


class RepositoryConfig(AppConfig):
    name = "repository"

    def ready(self) -> None:
        from jobs.models import Job
        from jobs.runner import register_handler
        from repository.retention import abandon_prune, run_prune
        from repository.verify import run_verify

        register_handler(Job.Kind.VERIFY, run_verify, label="Verify")
        register_handler(Job.Kind.RETENTION, run_prune, label="Retention", on_abandoned=abandon_prune)
