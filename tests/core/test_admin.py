"""The Django admin follows the site's rules: the last admin stays, secrets stay write-only."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.urls import reverse

from core import roles

User = get_user_model()


@pytest.fixture
def admin_client(client, users):
    admin = users[roles.ADMIN]
    admin.is_staff = admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    return client


def change(admin_client, user, **fields):
    data = {
        "username": user.username,
        "first_name": "",
        "last_name": "",
        "email": "",
        "is_active": "on",
        "is_staff": "on" if user.is_staff else "",
        "is_superuser": "on" if user.is_superuser else "",
        "groups": list(user.groups.values_list("pk", flat=True)),
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "initial-date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "initial-date_joined_1": user.date_joined.strftime("%H:%M:%S"),
    } | fields
    return admin_client.post(reverse("admin:auth_user_change", args=[user.pk]), {k: v for k, v in data.items() if v})


def still_admin(user) -> bool:
    return roles.role_of(User.objects.get(pk=user.pk)) == roles.ADMIN


@pytest.mark.parametrize(
    "edit",
    [
        {"is_active": ""},  # deactivated
        {"is_superuser": "", "groups": []},  # demoted
    ],
)
def test_it_keeps_the_last_admin_on_the_django_admin_change_page(admin_client, users, edit):
    admin = users[roles.ADMIN]
    response = change(admin_client, admin, **edit)
    assert response.status_code == 200 and roles.LAST_ADMIN in response.content.decode()
    assert still_admin(admin) and User.objects.get(pk=admin.pk).is_active


def test_it_lets_the_django_admin_demote_an_admin_when_another_remains(admin_client, users):
    other = User.objects.create_user(username="second-admin", password="a-Long-test-password-2")
    roles.set_role(other, roles.ADMIN)
    viewer_group = Group.objects.get(name=roles.VIEWER)
    assert change(admin_client, other, groups=[viewer_group.pk]).status_code == 302
    assert roles.role_of(User.objects.get(pk=other.pk)) == roles.VIEWER


def test_it_refuses_to_delete_the_last_admin_in_the_django_admin(admin_client, users):
    admin = users[roles.ADMIN]
    url = reverse("admin:auth_user_delete", args=[admin.pk])
    for response in (admin_client.get(url, follow=True), admin_client.post(url, {"post": "yes"}, follow=True)):
        assert roles.LAST_ADMIN in response.content.decode()
    assert still_admin(admin)
    viewer = users[roles.VIEWER]
    admin_client.post(reverse("admin:auth_user_delete", args=[viewer.pk]), {"post": "yes"})
    assert not User.objects.filter(pk=viewer.pk).exists()


def test_it_refuses_to_bulk_delete_the_last_admin_in_the_django_admin(admin_client, users):
    selected = [users[roles.ADMIN].pk, users[roles.VIEWER].pk]
    url = reverse("admin:auth_user_changelist")
    for confirmed in ({}, {"post": "yes"}):
        data = {"action": "delete_selected", "_selected_action": selected} | confirmed
        response = admin_client.post(url, data, follow=True)
        assert roles.LAST_ADMIN in response.content.decode()
    assert User.objects.filter(pk__in=selected).count() == 2
    response = admin_client.post(
        url, {"action": "delete_selected", "_selected_action": [users[roles.VIEWER].pk], "post": "yes"}
    )
    assert not User.objects.filter(pk=users[roles.VIEWER].pk).exists()


def test_it_shows_no_encrypted_field_on_any_django_admin_change_form(admin_client, rf):
    """Every registered ModelAdmin and its inlines: no form field and no read-only field holds a secret."""
    from django.contrib import admin

    from core.crypto import EncryptedTextField

    request = rf.get("/")
    request.user = User.objects.get(is_superuser=True)
    shown = []
    for model, model_admin in admin.site._registry.items():
        obj = model()  # an unsaved row: the change form, not the add form
        forms = [(model_admin, model_admin.get_form(request, obj), model_admin.get_list_display(request))]
        inlines = model_admin.get_inline_instances(request, obj)
        forms += [(inline, inline.get_formset(request, obj).form, ()) for inline in inlines]
        for page, form, listed in forms:
            secrets = {f.name for f in page.model._meta.fields if isinstance(f, EncryptedTextField)}
            visible = set(form.base_fields) | set(page.get_readonly_fields(request, obj)) | set(listed)
            shown += [f"{page.model.__name__}.{name}" for name in secrets & visible]
    assert shown == []
    # The pages themselves render without them (one per model holding a secret).
    from inventory.models import Manager

    manager = Manager.objects.create(
        name="e", api_url="https://e.example/ovirt-engine/api", username="admin@internal", password="s3cret-pw"
    )
    page = admin_client.get(reverse("admin:inventory_manager_change", args=[manager.pk]))
    assert page.status_code == 200 and b"s3cret-pw" not in page.content and b'name="password"' not in page.content


def test_it_keeps_the_role_groups_in_the_django_admin(admin_client, users):
    """Renaming or deleting the admin group would demote every admin at once."""
    from django.contrib.auth.models import Group

    group = Group.objects.get(name=roles.ADMIN)
    change = reverse("admin:auth_group_change", args=[group.pk])
    admin_client.post(change, {"name": "renamed"})
    assert admin_client.post(reverse("admin:auth_group_delete", args=[group.pk]), {"post": "yes"}).status_code == 403
    response = admin_client.post(
        reverse("admin:auth_group_changelist"),
        {"action": "delete_selected", "_selected_action": [group.pk], "post": "yes"},
        follow=True,
    )
    assert "The role groups (admin, operator, viewer) cannot be deleted." in response.content.decode()
    assert Group.objects.get(pk=group.pk).name == roles.ADMIN
    assert roles.role_of(users[roles.ADMIN]) == roles.ADMIN

    other = Group.objects.create(name="auditors")  # any other group is the admin's to change
    admin_client.post(reverse("admin:auth_group_delete", args=[other.pk]), {"post": "yes"})
    assert not Group.objects.filter(pk=other.pk).exists()
