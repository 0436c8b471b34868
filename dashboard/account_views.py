"""Accounts: the settings page with its users, a user's form, and one's own API tokens."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.db import transaction
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from core import roles
from core.audit import record_request
from core.ssh import site_key
from core.tokens import issue_token, revoke_token
from dashboard.forms import ApiTokenForm, UserForm

User = get_user_model()


@roles.role_required(roles.ADMINISTER)
def settings_page(request):
    users = User.objects.order_by("username").prefetch_related("groups")
    rows = [(u, roles.role_of(u)) for u in users]
    return render(request, "dashboard/settings.html", {"rows": rows, "site_public_key": site_key().public_key})


@roles.role_required(roles.ADMINISTER)
@transaction.atomic  # the last-admin check (in the form) and the change, one after another across requests
def user_edit(request, pk=None):
    user = get_object_or_404(User, pk=pk) if pk else None
    form = UserForm(request.POST or None, instance=user)
    if request.method == "POST" and form.is_valid():
        if user == request.user and not form.cleaned_data["is_active"]:
            form.add_error("is_active", "You cannot deactivate yourself.")
        else:
            saved = form.save()
            record_request(request, action="user_changed" if user else "user_created", target=saved)
            messages.success(request, f"User {saved.username} saved.")
            return redirect("settings")
    return render(request, "dashboard/user_form.html", {"form": form, "edited": user})


@roles.role_required(roles.VIEW)
def token_list(request):
    """The user's own API tokens. A new key is in this one answer only, never stored or redirected with."""
    form = ApiTokenForm(request.POST if "name" in request.POST else None)
    key = None
    if "revoke" in request.POST:
        pk = request.POST["revoke"]
        token = get_object_or_404(request.user.api_tokens, pk=pk if pk.isdecimal() else None)
        revoke_token(token=token)
        record_request(request, action="token_revoked", target=token)
        messages.success(request, f"Token {token.prefix} ({token.name}) revoked.")
        return redirect("token-list")
    if form.is_bound and form.is_valid():
        token, key = issue_token(user=request.user, name=form.cleaned_data["name"], days=form.cleaned_data["days"])
        record_request(request, action="token_created", target=token)
        form = ApiTokenForm()
    context = {
        "form": form,
        "key": key,
        "tokens": request.user.api_tokens.all(),
        "api_root": request.build_absolute_uri(reverse("api:api-root")),
    }
    return render(request, "dashboard/token_list.html", context)
