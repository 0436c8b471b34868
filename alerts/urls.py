from django.urls import path

from alerts import views

urlpatterns = [
    path("", views.alert_list, name="alert-list"),
    path("channels/", views.alert_channels, name="alert-channels"),
    path("policies/<int:pk>/", views.alert_edit, name="alert-edit"),
    path("policies/<int:pk>/test/<str:channel>/", views.alert_test, name="alert-test"),
]
