"""What other apps may listen to without the jobs app importing them."""

from django.dispatch import Signal

# Sent once a job reaches a final status (succeeded, failed, cancelled, or any final status a
# later version adds, such as skipped), with `job` and `status`.
job_finished = Signal()
