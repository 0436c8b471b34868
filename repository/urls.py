from django.urls import path

from repository import views

urlpatterns = [
    path("", views.destination_list, name="destination-list"),
    path("new/", views.destination_edit, name="destination-new"),
    path("<int:pk>/", views.destination_edit, name="destination-edit"),
]
