from datetime import date, datetime, time, timedelta

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from jobs.models import Node
from jobs.nodes import NodeError, find_node
from repository.models import BackupDestination, BackupPoint


class NodeNameField(forms.ModelChoiceField):
    """A node by name; an unknown name is refused naming the nodes there are."""

    def to_python(self, value):
        if value in self.empty_values:
            return None
        try:
            return find_node(str(value))
        except NodeError as e:
            raise ValidationError(str(e), code="invalid_choice") from None


class BackupDestinationForm(forms.ModelForm):
    node = NodeNameField(
        Node.objects.all(),
        to_field_name="name",
        required=False,
        empty_label="shared by every node (mounted at this path on each)",
        help_text="A directory of one node alone (its own disk): its backups, restores, verifies and prunes run there.",
    )

    class Meta:
        model = BackupDestination
        fields = ["name", "kind", "path", "node", "enabled"]


# The statuses the backups list offers: a backup that exists, is being written, or was found damaged.
# Failed attempts (and cancelled ones, which end failed here) are on the jobs list instead.
LISTED_STATUSES = [
    (BackupPoint.Status.COMPLETE, "Complete"),
    (BackupPoint.Status.DAMAGED, "Damaged"),
    (BackupPoint.Status.RUNNING, "Running"),
]


class PointFilterForm(forms.Form):
    """The backups list's filters, read from the query string (their state is the URL)."""

    vm = forms.CharField(label="VM name", required=False, max_length=255, help_text="The VMs whose name contains it.")
    destination = forms.ModelChoiceField(BackupDestination.objects.all(), required=False, empty_label="Any")
    strategy = forms.ChoiceField(required=False)
    type = forms.ChoiceField(required=False, choices=[("", "Any"), *BackupPoint.Type.choices])
    status = forms.ChoiceField(
        required=False, choices=[("", "Complete, damaged or running"), *LISTED_STATUSES], label="Status"
    )
    since = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, strategies: list[tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["strategy"].choices = [("", "Any"), *strategies]

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise ValidationError("The date range ends before it starts: From must be on or before To.")
        if until == date.max:  # the list reads up to the next midnight, which the calendar does not have
            self.add_error("until", f"{until} is outside the dates this list can read: give one before it.")
        return data

    def filter(self, points):
        """The points the valid filters select (no failed or deleted point in any case)."""
        data = self.cleaned_data
        if data.get("status"):
            points = points.filter(status=data["status"])
        else:
            points = points.filter(status__in=[value for value, _ in LISTED_STATUSES])
        if data.get("vm"):
            points = points.filter(vm__name__icontains=data["vm"])
        if data.get("destination"):
            points = points.filter(destination=data["destination"])
        if data.get("strategy"):
            points = points.filter(strategy=data["strategy"])
        if data.get("type"):
            points = points.filter(type=data["type"])
        zone = timezone.get_current_timezone()
        if data.get("since"):
            points = points.filter(started__gte=datetime.combine(data["since"], time.min, tzinfo=zone))
        if data.get("until"):
            points = points.filter(
                started__lt=datetime.combine(data["until"] + timedelta(days=1), time.min, tzinfo=zone)
            )
        return points
