from django.urls import path

from inventory import views

urlpatterns = [
    path("vms/<int:pk>/guest/", views.vm_guest_access, name="vm-guest-access"),
    path("managers/", views.manager_list, name="manager-list"),
    path("managers/new/", views.manager_edit, name="manager-new"),
    path("managers/<int:pk>/", views.manager_edit, name="manager-edit"),
    path("managers/<int:pk>/test/", views.manager_test, name="manager-test"),
    path("managers/<int:pk>/sync/", views.manager_sync, name="manager-sync"),
    path("managers/<int:pk>/delete/", views.manager_delete, name="manager-delete"),
    path("hosts/", views.host_list, name="host-list"),
    path("hosts/<int:pk>/", views.host_detail, name="host-detail"),
    path("hosts/<int:pk>/ssh/", views.host_edit, name="host-edit"),
    path("proxies/", views.proxy_list, name="proxy-list"),
    path("proxies/mark/<int:vm>/", views.proxy_mark, name="proxy-mark"),
    path("proxies/<int:pk>/remove/", views.proxy_remove, name="proxy-remove"),
]
