from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import routers

from backupsite import roles, views
from backupsite.api import UserViewSet
from inventory.api import router as inventory_router
from jobs.api import router as jobs_router
from repository.api import router as repository_router

# One router per app; this one adds the site's own endpoints and serves the API root.
api_router = routers.DefaultRouter()
api_router.register("users", UserViewSet, basename="user")
for app_router in (inventory_router, repository_router, jobs_router):
    api_router.registry.extend(app_router.registry)

SCHEMA_RULES = {"read": roles.VIEW, "write": roles.ADMINISTER}


class SchemaView(SpectacularAPIView):
    permission_classes = [roles.RolePermission]
    role_rules = SCHEMA_RULES


class SwaggerView(SpectacularSwaggerView):
    permission_classes = [roles.RolePermission]
    role_rules = SCHEMA_RULES


api_urls = [
    path("", include(api_router.urls)),
    path("schema/", SchemaView.as_view(), name="schema"),
    path("docs/", SwaggerView.as_view(url_name="api:schema"), name="swagger-ui"),
]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("settings/", views.settings_page, name="settings"),
    path("settings/users/new/", views.user_edit, name="user-new"),
    path("settings/users/<int:pk>/", views.user_edit, name="user-edit"),
    path("inventory/", include("inventory.urls")),
    path("policies/", include("jobs.urls_policies")),
    path("jobs/", include("jobs.urls")),
    path("backups/", include("repository.urls_backups")),
    path("destinations/", include("repository.urls")),
    path("api/v1/", include((api_urls, "api"))),
    path("admin/", admin.site.urls),
]
