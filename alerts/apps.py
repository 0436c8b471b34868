from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from alerts import checks, events  # noqa: F401 (checks registers itself)
        from alerts.models import AlertDelivery, AlertEvent
        from core.formats import register_labels
        from jobs.signals import job_finished
        from repository.signals import point_damaged

        job_finished.connect(events.job_finished, dispatch_uid="alerts_job_finished")
        point_damaged.connect(events.point_damaged, dispatch_uid="alerts_point_damaged")
        register_labels("alert_kind", dict(AlertEvent.Kind.choices))
        register_labels("alert_channel", dict(AlertDelivery.Channel.choices))
