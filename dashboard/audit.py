"""Reading the audit log (core.audit writes it): one set of filters for its page and its API."""

from datetime import UTC

import django_filters
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField

from core.models import AuditEvent


class UtcDateTimeField(IsoDateTimeField):
    """An ISO 8601 time with any offset Python takes, given to the database in UTC: PostgreSQL refuses
    offsets beyond 15:59 hours (a 500 where the caller sent a bad time), and a time that UTC puts
    before year 1 is out of range."""

    def to_python(self, value):
        value = super().to_python(value)
        if value is None:
            return None
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValidationError("Enter a time within the years 1 to 9999 (UTC).", code="invalid") from None


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class AuditEventFilter(django_filters.FilterSet):
    # A choice among the users, as the API's other foreign-key filters: a number too large for the
    # database is an unknown user (400), not a database error.
    actor = django_filters.ModelChoiceFilter(queryset=get_user_model().objects.all(), help_text="the user's id")
    actor_name = django_filters.CharFilter(lookup_expr="iexact", help_text="the user name, as it was then")
    action = django_filters.CharFilter(help_text="e.g. login_failed, backup_requested, policy_changed")
    source = django_filters.ChoiceFilter(choices=AuditEvent.Source.choices)
    target_type = django_filters.CharFilter(help_text="e.g. policy, vm, backuppoint")
    since = UtcDateTimeFilter(field_name="time", lookup_expr="gte", help_text="at or after")
    until = UtcDateTimeFilter(field_name="time", lookup_expr="lt", help_text="before")

    class Meta:
        model = AuditEvent
        fields = ["actor", "actor_name", "action", "source", "target_type", "since", "until"]
