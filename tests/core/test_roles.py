"""Who may do what, over every endpoint and page. A new endpoint or page without a rule
fails here until it is added to the tables below."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from backupsite.urls import api_router
from core import roles
from inventory.models import VM, Host, Manager, ProxyVM
from jobs.models import Job, Node
from policies.models import Policy
from recovery.models import FileSession, InstantRestore
from repository.models import BackupDestination, BackupPoint

V, OP, A = roles.VIEW, roles.OPERATE, roles.ADMINISTER

# basename: (action needed to read, action needed to write)
API = {
    "user": (A, A),
    "token": (V, V),
    "manager": (V, A),
    "datacenter": (V, A),
    "cluster": (V, A),
    "host": (V, A),
    "storagedomain": (V, A),
    "tag": (V, A),
    "vm": (V, A),
    "disk": (V, A),
    "destination": (V, A),
    "backup": (V, OP),
    "diskbackup": (V, OP),
    "policy": (V, OP),
    "job": (V, OP),
    "node": (V, A),
    "proxy": (V, A),
    "audit": (A, A),
    "alert-rule": (V, OP),
    "alert-delivery": (V, OP),
    "alert-event": (V, OP),
    "file-session": (OP, OP),  # a guest's files: the most sensitive data the service holds
    "instant-restore": (V, OP),
}

# URL name: action needed to open the page
PAGES = {
    "dashboard": V,
    "settings": A,
    "user-new": A,
    "user-edit": A,
    "token-list": V,
    "vm-list": V,
    "vm-detail": V,
    "vm-bulk": OP,
    "policy-list": V,
    "policy-new": OP,
    "policy-edit": OP,
    "policy-detail": V,
    "policy-schedule-preview": V,
    "policy-run": OP,
    "job-list": V,
    "job-detail": V,
    "point-list": V,
    "point-detail": V,
    "destination-list": V,
    "destination-new": A,
    "destination-edit": A,
    "manager-list": V,
    "manager-new": A,
    "manager-edit": A,
    "manager-test": A,
    "manager-sync": OP,
    "manager-delete": A,
    "host-list": V,
    "host-detail": V,
    "host-edit": A,
    "proxy-list": V,
    "proxy-mark": A,
    "proxy-remove": A,
    "vm-backup": OP,
    "vm-guest-access": A,
    "point-restore": OP,
    "point-verify": OP,
    "point-verify-all": OP,
    "point-delete": OP,
    "policy-prune-preview": V,
    "policy-prune": OP,
    "job-cancel": OP,
    "node-list": V,
    "node-drain": A,
    "audit-log": A,
    "alert-list": V,
    "alert-edit": OP,
    "alert-channels": V,
    "alert-test": A,
    "point-files": OP,
    "files-sessions": OP,
    "files-session": OP,
    "files-download": OP,
    "files-put": OP,
    "files-close": OP,
    "point-instant": OP,
    "point-prove": OP,
    "instant-list": V,
    "instant-detail": V,
    "instant-migrate": OP,
    "instant-discard": OP,
}
POST_ONLY = {
    "vm-bulk",
    "proxy-mark",
    "proxy-remove",
    "manager-test",
    "manager-sync",
    "manager-delete",
    "job-cancel",
    "node-drain",
    "point-verify",
    "point-verify-all",
    "policy-prune",
    "policy-run",
    "point-files",
    "files-put",
    "files-close",
    "point-prove",
    "instant-migrate",
    "instant-discard",
    "alert-test",
}
# Pages that, once the role lets the request through, answer on its content: the closed session of
# the fixtures cannot be downloaded from (400), never a 403.
CONTENT_REFUSED = {"files-download"}
PUBLIC_PAGES = {"login", "logout"}
ALL_ROLES = ["anonymous", None, roles.VIEWER, roles.OPERATOR, roles.ADMIN]


def allowed(role, action) -> bool:
    return role in roles.ALLOWED[action]


def test_it_has_a_rule_for_every_api_endpoint():
    assert {basename for _, _, basename in api_router.registry} == set(API)
    for _, viewset, basename in api_router.registry:
        assert (viewset.role_rules["read"], viewset.role_rules["write"]) == API[basename], basename


def _named_page_patterns(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if route.startswith(("api/", "admin/")):
            continue
        if isinstance(entry, URLResolver):
            yield from _named_page_patterns(entry, route)
        elif isinstance(entry, URLPattern) and entry.name:
            yield entry


def test_it_has_a_rule_for_every_page():
    patterns = {p.name: p for p in _named_page_patterns()}
    assert set(patterns) == set(PAGES) | PUBLIC_PAGES
    for name, action in PAGES.items():
        assert getattr(patterns[name].callback, "role_action", None) == action, name


@pytest.mark.parametrize("role", ALL_ROLES)
@pytest.mark.parametrize("basename", sorted(API))
def test_it_enforces_roles_on_the_api(api_as, role, basename):
    read, write = API[basename]
    client = api_as(role)
    url = reverse(f"api:{basename}-list")
    response = client.get(url)
    if role == "anonymous":
        assert response.status_code == 401
    else:
        assert response.status_code == (200 if allowed(role, read) else 403), response.content
    response = client.post(url, {}, format="json")
    if role == "anonymous":
        assert response.status_code == 401
    elif not allowed(role, write):
        assert response.status_code == 403
        assert response.json()["error"]["status"] == 403
    else:
        # Allowed through: the request fails on its content (400) or method (405), never the role.
        assert response.status_code in (400, 405), response.content


@pytest.fixture
def objects(db, users, destination_dir):
    manager = Manager.objects.create(
        name="e", api_url="https://e.example/ovirt-engine/api", username="admin@internal", password="x"
    )
    vm = VM.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-000000000001", name="vm1")
    dest = BackupDestination.objects.create(name="d", path=str(destination_dir))
    policy = Policy.objects.create(name="p", destination=dest)
    job = Job.objects.create(kind="sync", name="e")
    host = Host.objects.create(manager=manager, engine_id="00000000-0000-0000-0000-0000000000a1", name="h1")
    point = BackupPoint.objects.create(vm=vm, destination=dest, strategy="image_transfer", status="complete")
    node = Node.objects.create(name="n1", version="0.1.0")
    proxy = ProxyVM.objects.create(vm=vm, node=node)
    session = FileSession.objects.create(point=point, node=node.name, who="someone", status="closed")
    # Ended: what is asked of it is refused in words (a redirect with a message), never a 403.
    instant = InstantRestore.objects.create(point=point, vm=vm, name="vm1-instant", node="n1", status="discarded")
    return {
        "point-instant": point.pk,
        "point-prove": point.pk,
        "instant-detail": instant.pk,
        "instant-migrate": instant.pk,
        "instant-discard": instant.pk,
        "point-files": point.pk,
        "files-session": session.pk,
        "files-download": session.pk,
        "files-put": session.pk,
        "files-close": session.pk,
        "proxy-mark": {"vm": vm.pk},
        "proxy-remove": proxy.pk,
        "node-drain": {"name": node.name},
        "user-edit": users[roles.VIEWER].pk,
        "vm-detail": vm.pk,
        "policy-edit": policy.pk,
        "policy-detail": policy.pk,
        "policy-run": policy.pk,
        "job-detail": job.pk,
        "destination-edit": dest.pk,
        "manager-edit": manager.pk,
        "manager-test": manager.pk,
        "manager-sync": manager.pk,
        "manager-delete": manager.pk,
        "host-edit": host.pk,
        "host-detail": host.pk,
        "vm-backup": vm.pk,
        "vm-guest-access": vm.pk,
        "point-restore": point.pk,
        "point-detail": point.pk,
        "point-verify": point.pk,
        "point-delete": point.pk,
        "policy-prune-preview": policy.pk,
        "policy-prune": policy.pk,
        "job-cancel": job.pk,
        "alert-edit": policy.pk,
        "alert-test": {"pk": policy.pk, "channel": "email"},
    }


@pytest.mark.parametrize("role", ALL_ROLES)
@pytest.mark.parametrize("name", sorted(PAGES))
def test_it_enforces_roles_on_pages(client, users, objects, role, name):
    if role != "anonymous":
        client.force_login(users[role])
    kwargs = objects.get(name)
    url = reverse(name, kwargs=kwargs if isinstance(kwargs, dict) or kwargs is None else {"pk": kwargs})
    response = client.post(url) if name in POST_ONLY else client.get(url)
    if role == "anonymous":
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    elif not allowed(role, PAGES[name]):
        assert response.status_code == 403
    elif name in CONTENT_REFUSED:
        assert response.status_code == 400, response.content
    else:
        assert response.status_code in ((200, 302) if name in POST_ONLY else (200,))


def test_it_refuses_a_viewer_posting_a_form(client, users, objects, destination_dir):
    client.force_login(users[roles.VIEWER])
    response = client.post(reverse("destination-new"), {"name": "x", "kind": "filesystem", "path": "/tmp"})
    assert response.status_code == 403
    assert not BackupDestination.objects.filter(name="x").exists()


def test_it_reads_the_schema_only_with_a_role(api_as):
    assert api_as(None).get(reverse("api:schema")).status_code == 403
    response = api_as(roles.VIEWER).get(reverse("api:schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert "/api/v1/vms/" in response.json()["paths"]


def test_it_lets_an_operator_but_not_a_viewer_read_job_events(api_as, objects):
    url = reverse("api:job-events", kwargs={"pk": objects["job-detail"]})
    assert api_as(roles.VIEWER).get(url).status_code == 200
    assert api_as("anonymous").get(url).status_code == 401


def test_it_treats_a_view_without_rules_as_a_bug(rf, users):
    from django.core.exceptions import ImproperlyConfigured
    from rest_framework.views import APIView

    class Careless(APIView):
        permission_classes = [roles.RolePermission]

    request = rf.get("/")
    request.user = users[roles.ADMIN]
    with pytest.raises(ImproperlyConfigured):
        roles.RolePermission().has_permission(request, Careless())


def test_it_serves_swagger_ui_from_vendored_assets(client, users):
    client.force_login(users[roles.VIEWER])
    response = client.get(reverse("api:swagger-ui"))
    assert response.status_code == 200
    assert b"swagger-ui" in response.content and b"cdn" not in response.content.lower()
