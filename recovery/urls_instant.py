from django.urls import path

from recovery import instant_views

urlpatterns = [
    path("", instant_views.instant_list, name="instant-list"),
    path("<int:pk>/", instant_views.instant_detail, name="instant-detail"),
    path("<int:pk>/migrate/", instant_views.instant_migrate, name="instant-migrate"),
    path("<int:pk>/discard/", instant_views.instant_discard, name="instant-discard"),
]
