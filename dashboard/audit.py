"""Reading the audit log (core.audit writes it): one set of filters for its page and its API."""

import django_filters
from django.contrib.auth import get_user_model

from core.models import AuditEvent


class AuditEventFilter(django_filters.FilterSet):
    # A choice among the users, as the API's other foreign-key filters: a number too large for the
    # database is an unknown user (400), not a database error.
    actor = django_filters.ModelChoiceFilter(queryset=get_user_model().objects.all(), help_text="the user's id")
    actor_name = django_filters.CharFilter(lookup_expr="iexact", help_text="the user name, as it was then")
    action = django_filters.CharFilter(help_text="e.g. login_failed, backup_requested, policy_changed")
    source = django_filters.ChoiceFilter(choices=AuditEvent.Source.choices)
    target_type = django_filters.CharFilter(help_text="e.g. policy, vm, backuppoint")
    since = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="gte", help_text="at or after")
    until = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="lt", help_text="before")

    class Meta:
        model = AuditEvent
        fields = ["actor", "actor_name", "action", "source", "target_type", "since", "until"]
