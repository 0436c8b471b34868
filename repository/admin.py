from django.contrib import admin

from repository import models


@admin.register(models.BackupDestination)
class BackupDestinationAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "path", "enabled", "free_bytes")


class DiskBackupInline(admin.TabularInline):
    model = models.DiskBackup
    extra = 0


@admin.register(models.BackupPoint)
class BackupPointAdmin(admin.ModelAdmin):
    list_display = ("vm", "type", "status", "strategy", "started", "consistency")
    list_filter = ("status", "type", "strategy")
    inlines = [DiskBackupInline]
