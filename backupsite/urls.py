"""The composition root's URLs: every app's pages, and one API router made of the apps' routers."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework import routers
from rest_framework.response import Response
from rest_framework.reverse import reverse

from alerts.api import router as alerts_router
from core import roles
from dashboard import account_views, inventory_views
from dashboard import views as dashboard_views
from dashboard.api import router as dashboard_router
from inventory.api import router as inventory_router
from jobs.api import router as jobs_router
from policies.api import router as policies_router
from recovery.api import router as recovery_router
from repository.api import router as repository_router
from strategies.api import router as strategies_router


class APIRootView(routers.APIRootView):
    """The API of oVirt Backup: its endpoints, the documentation of each (docs: Swagger UI; schema:
    OpenAPI), and the site's pages (site). Scripts authenticate with "Authorization: Token <key>":
    make a key on the site's API tokens page."""

    role_rules = {"read": roles.VIEW, "write": roles.ADMINISTER}

    def get(self, request, *args, **kwargs):
        endpoints = super().get(request, *args, **kwargs).data
        return Response(
            {
                "endpoints": endpoints,
                "docs": reverse("api:swagger-ui", request=request),
                "schema": reverse("api:schema", request=request),
                "site": reverse("dashboard", request=request),
                "tokens": reverse("token-list", request=request),
            }
        )


class APIRouter(routers.DefaultRouter):
    APIRootView = APIRootView


# One router per app; this one serves the API root. Two apps may add routes under one prefix
# (`vms/{id}/backup/` comes from strategies, the VMs themselves from the dashboard).
api_router = APIRouter()
for app_router in (
    dashboard_router,
    inventory_router,
    repository_router,
    jobs_router,
    policies_router,
    strategies_router,
    recovery_router,
    alerts_router,
):
    api_router.registry.extend(app_router.registry)

SCHEMA_RULES = {"read": roles.VIEW, "write": roles.ADMINISTER}


class SchemaView(SpectacularAPIView):
    permission_classes = [roles.RolePermission]
    role_rules = SCHEMA_RULES


class SwaggerView(SpectacularSwaggerSplitView):
    # The split view serves its set-up script from ?script instead of inline: the CSP allows only files.
    permission_classes = [roles.RolePermission]
    role_rules = SCHEMA_RULES


api_urls = [
    path("", include(api_router.urls)),
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", SwaggerView.as_view(url_name="api:schema"), name="swagger-ui"),
]

handler403 = "core.api.forbidden"
handler404 = "core.api.not_found"
handler500 = "core.api.failed"

urlpatterns = [
    path("", dashboard_views.dashboard, name="dashboard"),
    # What a browser asks for on a page without <link rel="icon"> (the API's JSON, a download) and
    # monitoring tools always: the site's icon, not a 404 in the log.
    path("favicon.ico", RedirectView.as_view(url=static("favicon.png"), permanent=True)),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("settings/", account_views.settings_page, name="settings"),
    path("settings/users/new/", account_views.user_edit, name="user-new"),
    path("settings/users/<int:pk>/", account_views.user_edit, name="user-edit"),
    path("settings/tokens/", account_views.token_list, name="token-list"),
    path("settings/audit/", dashboard_views.audit_log, name="audit-log"),
    path("inventory/", inventory_views.vm_list, name="vm-list"),
    path("inventory/vms/bulk/", inventory_views.vm_bulk, name="vm-bulk"),
    path("inventory/vms/<int:pk>/", inventory_views.vm_detail, name="vm-detail"),
    path("inventory/vms/<int:pk>/backup/", include("strategies.urls")),
    path("inventory/", include("inventory.urls")),
    path("policies/", include("policies.urls")),
    path("alerts/", include("alerts.urls")),
    path("jobs/", include("jobs.urls")),
    path("backups/", include("repository.urls_backups")),
    path("backups/", include("recovery.urls")),
    path("files/", include("recovery.urls_files")),
    path("instant/", include("recovery.urls_instant")),
    path("destinations/", include("repository.urls")),
    path("api/v1/", include((api_urls, "api"))),
    path("admin/", admin.site.urls),
]
