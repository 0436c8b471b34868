from django.contrib import admin

from jobs import models


@admin.register(models.Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ("name", "strategy", "schedule", "destination", "enabled", "priority")
    filter_horizontal = ("vms",)


class JobEventInline(admin.TabularInline):
    model = models.JobEvent
    extra = 0
    readonly_fields = ("time", "level", "message")


@admin.register(models.Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "name", "node", "created", "finished")
    list_filter = ("kind", "status")
    inlines = [JobEventInline]
