from django.contrib import admin

from policies import models


@admin.register(models.Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ("name", "strategy", "schedule", "destination", "enabled", "priority")
    filter_horizontal = ("vms",)
