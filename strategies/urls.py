from django.urls import path

from strategies import views

urlpatterns = [
    path("", views.vm_backup, name="vm-backup"),
]
