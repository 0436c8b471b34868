from django.urls import path

from recovery import views

urlpatterns = [
    path("<int:pk>/restore/", views.point_restore, name="point-restore"),
]
