"""Reading the audit log (core.audit writes it): one set of filters for its page and its API."""

import django_filters

from core.models import AuditEvent


class AuditEventFilter(django_filters.FilterSet):
    actor = django_filters.NumberFilter(field_name="actor_id", help_text="the user's id")
    actor_name = django_filters.CharFilter(lookup_expr="iexact", help_text="the user name, as it was then")
    action = django_filters.CharFilter(help_text="e.g. login_failed, backup_requested, policy_changed")
    source = django_filters.ChoiceFilter(choices=AuditEvent.Source.choices)
    target_type = django_filters.CharFilter(help_text="e.g. policy, vm, backuppoint")
    since = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="gte", help_text="at or after")
    until = django_filters.IsoDateTimeFilter(field_name="time", lookup_expr="lt", help_text="before")

    class Meta:
        model = AuditEvent
        fields = ["actor", "actor_name", "action", "source", "target_type", "since", "until"]
