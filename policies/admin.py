from django.contrib import admin

from policies import models


@admin.register(models.Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ("name", "strategy", "schedule", "destination", "enabled", "priority")
    filter_horizontal = ("vms",)
    exclude = ("guest_ssh_private_key",)  # write-only: set on the policy's own page or through the API
