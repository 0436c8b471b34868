from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from jobs.shutdown import install_worker_handlers

        post_spawn.connect(install_worker_handlers, dispatch_uid="jobs-worker-stop-handlers")
