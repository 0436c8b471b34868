from django.urls import path

from policies import views

urlpatterns = [
    path("", views.policy_list, name="policy-list"),
    path("new/", views.policy_edit, name="policy-new"),
    path("schedule-preview/", views.schedule_preview, name="policy-schedule-preview"),
    path("<int:pk>/", views.policy_detail, name="policy-detail"),
    path("<int:pk>/edit/", views.policy_edit, name="policy-edit"),
    path("<int:pk>/run/", views.policy_run, name="policy-run"),
    path("<int:pk>/prune/", views.policy_prune_preview, name="policy-prune-preview"),
    path("<int:pk>/prune/run/", views.policy_prune, name="policy-prune"),
]
