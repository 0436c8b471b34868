from django.urls import path

from alerts import views

urlpatterns = [
    path("", views.alert_list, name="alert-list"),
    path("policies/<int:pk>/", views.alert_edit, name="alert-edit"),
]
