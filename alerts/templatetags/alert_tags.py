"""`{% load alert_tags %}{% unusual_change %}`: the VMs flagged for an unusual change rate, for the
dashboard (templates/alerts/_unusual_change.html; one query)."""

from django import template

from alerts.change_rate import flagged_vms

register = template.Library()


@register.inclusion_tag("alerts/_unusual_change.html")
def unusual_change() -> dict:
    return {"unusual_change": flagged_vms()}
