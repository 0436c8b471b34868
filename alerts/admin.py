from django.contrib import admin

from alerts import models


@admin.register(models.AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ("policy", "emails", "webhook_url", "rpo_hours", "digest")
    exclude = ("webhook_secret",)  # write-only: set on the alerts page or through the API


@admin.register(models.AlertDelivery)
class AlertDeliveryAdmin(admin.ModelAdmin):
    list_display = ("time", "rule", "channel", "status", "attempts", "subject")
    list_filter = ("channel", "status")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
