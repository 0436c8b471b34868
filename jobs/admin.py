from django.contrib import admin

from jobs import models


class JobEventInline(admin.TabularInline):
    model = models.JobEvent
    extra = 0
    readonly_fields = ("time", "level", "message")


@admin.register(models.Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "status", "name", "node", "created", "finished")
    list_filter = ("kind", "status")
    inlines = [JobEventInline]
