from django.urls import path

from jobs import views

urlpatterns = [
    path("", views.job_list, name="job-list"),
    path("<int:pk>/", views.job_detail, name="job-detail"),
    path("<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
    path("nodes/", views.node_list, name="node-list"),
    path("nodes/<str:name>/drain/", views.node_drain, name="node-drain"),
]
