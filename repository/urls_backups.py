from django.urls import path

from repository import views

urlpatterns = [
    path("", views.point_list, name="point-list"),
    path("<int:pk>/", views.point_detail, name="point-detail"),
    path("verify/", views.point_verify, name="point-verify-all"),
    path("<int:pk>/verify/", views.point_verify, name="point-verify"),
    path("<int:pk>/delete/", views.point_delete, name="point-delete"),
]
