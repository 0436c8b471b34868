from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        from django_q.signals import post_execute_in_worker, post_spawn, pre_execute

        import jobs.checks  # noqa: F401  (registers the system checks)
        from core.api import register_queue_check
        from jobs import shutdown
        from jobs.broker import broker_error, is_broker_failure

        post_spawn.connect(shutdown.install_worker_handlers, dispatch_uid="jobs-worker-stop-handlers")
        pre_execute.connect(shutdown.task_started, dispatch_uid="jobs-task-started")
        post_execute_in_worker.connect(shutdown.task_ended, dispatch_uid="jobs-task-ended")
        register_queue_check(
            broker_error, is_failure=is_broker_failure
        )  # an API request that queued a job says when the broker is down
