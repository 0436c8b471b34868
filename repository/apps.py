from django.apps import AppConfig


class RepositoryConfig(AppConfig):
    name = "repository"

    def ready(self) -> None:
        from core.formats import register_labels
        from jobs.placement import register_placement
        from jobs.runner import register_handler
        from repository.models import BackupPoint
        from repository.places import (
            DESTINATION_CHECK,
            destination_check_placement,
            local_to_placement,
            run_destination_check,
        )
        from repository.retention import RETENTION, abandon_prune, run_prune
        from repository.verify import VERIFY, run_verify

        # A job's result and the CLI name points' types and consistency by key: people read labels.
        register_labels("point type", dict(BackupPoint.Type.choices))
        register_labels("consistency", dict(BackupPoint.Consistency.choices))
        register_handler(VERIFY, run_verify, label="Verify")
        register_handler(RETENTION, run_prune, label="Retention", on_abandoned=abandon_prune)
        register_handler(DESTINATION_CHECK, run_destination_check, label="Destination check")
        # A verify or prune of destinations local to a node runs there (repository.places).
        register_placement(VERIFY, local_to_placement)
        register_placement(RETENTION, local_to_placement)
        register_placement(DESTINATION_CHECK, destination_check_placement)
