from django.urls import path

from policies import views

urlpatterns = [
    path("", views.policy_list, name="policy-list"),
    path("new/", views.policy_edit, name="policy-new"),
    path("<int:pk>/", views.policy_edit, name="policy-edit"),
]
