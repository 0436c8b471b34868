"""The jobs list's filters, read from the query string: each value is checked, and one that cannot
be read is said on the page (a 400), never ignored."""

from datetime import timedelta

from django import forms
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.db.models import Exists, OuterRef
from django.utils import timezone

from jobs.kinds import kind_choices
from jobs.models import Job

# How far back "since" looks: the dashboard's "last 24 hours" and its 7- and 30-day charts link here.
SINCE = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
SINCE_CHOICES = [("", "Any time"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days")]
# What starts jobs on a schedule: the policy (Job.started_by), named by string as the layers require.
POLICY_MODEL = ("policies", "policy")
# "Each VM's newest": what the dashboard's "last 24 hours" counts (a VM that failed at 01:00 and was
# backed up at 02:00 is not failing), so its links list the jobs it counted and no others. Per kind: a
# verify or a retention run after a backup does not hide how the backup went.
NEWEST_CHOICES = [("", "Every job"), ("1", "Each VM's newest of each kind")]


class JobFilterForm(forms.Form):
    status = forms.ChoiceField(required=False, choices=[("", "Any"), *Job.Status.choices])
    kind = forms.ChoiceField(required=False)
    since = forms.ChoiceField(required=False, choices=SINCE_CHOICES, label="Created")
    policy = forms.TypedChoiceField(required=False, coerce=int, empty_value=None, label="Started by policy")
    newest = forms.ChoiceField(required=False, choices=NEWEST_CHOICES, label="Show")
    node = forms.CharField(required=False, max_length=100, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [("", "Any"), *kind_choices()]
        self.fields["policy"].choices = [("", "Any"), *policy_choices()]

    def filter(self, jobs):
        data = self.cleaned_data
        if data.get("kind"):
            jobs = jobs.filter(kind=data["kind"])
        if data.get("since"):
            jobs = jobs.filter(created__gte=timezone.now() - SINCE[data["since"]])
        if data.get("policy") is not None:
            jobs = jobs.filter(
                started_by_type=ContentType.objects.get_by_natural_key(*POLICY_MODEL), started_by_id=data["policy"]
            )
        if data.get("node"):
            jobs = jobs.filter(node=data["node"])
        if data.get("newest"):
            # Newest among the jobs the other filters choose, before the status is looked at: the
            # failures of VMs whose newest job failed, not every failure. A job without a VM (a sync)
            # stands alone. A policy's job and a hand-started one are told apart only by ?policy=.
            newer = jobs.filter(vm=OuterRef("vm"), kind=OuterRef("kind"), pk__gt=OuterRef("pk"))
            jobs = jobs.exclude(Exists(newer))
        if data.get("status"):
            jobs = jobs.filter(status=data["status"])
        return jobs


def policy_choices() -> list[tuple[int, str]]:
    """(id, name) of the site's policies, when the policies app is installed (it sits above jobs)."""
    try:
        model = apps.get_model(*POLICY_MODEL)
    except LookupError:
        return []
    return list(model.objects.order_by("name").values_list("pk", "name"))
