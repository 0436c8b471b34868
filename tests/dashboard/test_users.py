"""Users: admins manage accounts and roles; weak passwords are refused."""

from django.urls import reverse

from core import roles


def error_fields(response) -> dict:
    body = response.json()["error"]
    assert body["status"] == 400
    return body["fields"]


def test_it_refuses_a_weak_password_for_a_new_user(api_as):
    response = api_as(roles.ADMIN).post(
        reverse("api:user-list"), {"username": "bob", "role": "viewer", "password": "123"}, format="json"
    )
    assert "password" in error_fields(response)


def test_it_lets_an_admin_manage_users(api_as, client):
    admin = api_as(roles.ADMIN)
    response = admin.post(
        reverse("api:user-list"), {"username": "bob", "role": "operator", "password": "correct-Horse-9"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["role"] == "operator"
    assert "password" not in response.json()
    pk = response.json()["id"]
    response = admin.patch(reverse("api:user-detail", kwargs={"pk": pk}), {"role": "viewer"}, format="json")
    assert response.json()["role"] == "viewer"
    assert client.login(username="bob", password="correct-Horse-9")
    assert admin.delete(reverse("api:user-detail", kwargs={"pk": pk})).status_code == 204
    assert not client.login(username="bob", password="correct-Horse-9")


def test_it_lets_an_admin_create_a_user_in_the_ui(client, users):
    client.force_login(users[roles.ADMIN])
    response = client.post(
        reverse("user-new"), {"username": "carol", "role": "viewer", "password": "correct-Horse-9", "is_active": "on"}
    )
    assert response.status_code == 302
    from django.contrib.auth import get_user_model

    assert roles.role_of(get_user_model().objects.get(username="carol")) == "viewer"
