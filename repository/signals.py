"""What other apps may listen to without the repository importing them."""

from django.dispatch import Signal

# Sent when a verify finds a point damaged that was not known to be, with `point` and `problems`.
point_damaged = Signal()
