from django.urls import path

from recovery import file_views

urlpatterns = [
    path("", file_views.session_list, name="files-sessions"),
    path("<int:pk>/", file_views.session_page, name="files-session"),
    path("<int:pk>/download/", file_views.session_download, name="files-download"),
    path("<int:pk>/put/", file_views.session_put_back, name="files-put"),
    path("<int:pk>/close/", file_views.session_close, name="files-close"),
]
