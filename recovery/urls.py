from django.urls import path

from recovery import file_views, instant_views, views

urlpatterns = [
    path("<int:pk>/restore/", views.point_restore, name="point-restore"),
    path("<int:pk>/files/", file_views.point_files, name="point-files"),
    path("<int:pk>/instant/", instant_views.point_instant, name="point-instant"),
    path("<int:pk>/prove/", instant_views.point_prove, name="point-prove"),
]
