from django.urls import path

from repository import views

urlpatterns = [
    path("", views.point_list, name="point-list"),
]
