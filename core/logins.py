"""Throttled logins (django-axes): which address a login came from, and what a locked-out person reads."""

from math import ceil

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def client_address(request: HttpRequest) -> str | None:
    """The address failed logins are counted against.

    Behind a proxy every request comes from the proxy: the client is the last address in
    X-Forwarded-For, the one our proxy added (earlier ones are whatever the client sent).
    """
    if settings.BEHIND_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return request.META.get("REMOTE_ADDR")


def locked_out(request: HttpRequest, original_response=None, credentials=None) -> HttpResponse:
    """The answer to a login while the account or the address is locked, on our pages and the Django admin's."""
    minutes = ceil(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    return render(
        request,
        "registration/locked_out.html",
        {"minutes": minutes, "failures": settings.AXES_FAILURE_LIMIT},
        status=429,
    )


def forget_own_failures(sender, request: HttpRequest, user, **kwargs) -> None:
    """Receiver of user_logged_in: the failures of this user from this address are forgiven (typos
    before a right password). Not those of other names from this address, nor of this name from
    elsewhere: a person who can log in must not reset the count against someone else's account."""
    from axes.models import AccessAttempt

    AccessAttempt.objects.filter(username=user.get_username(), ip_address=client_address(request)).delete()
