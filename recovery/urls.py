from django.urls import path

from recovery import file_views, views

urlpatterns = [
    path("<int:pk>/restore/", views.point_restore, name="point-restore"),
    path("<int:pk>/files/", file_views.point_files, name="point-files"),
]
