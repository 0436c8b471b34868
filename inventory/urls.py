from django.urls import path

from inventory import views

urlpatterns = [
    path("", views.vm_list, name="vm-list"),
    path("vms/<int:pk>/", views.vm_detail, name="vm-detail"),
]
