from django.contrib import admin

from inventory import models


@admin.register(models.Manager)
class ManagerAdmin(admin.ModelAdmin):
    list_display = ("name", "api_url", "username", "status", "last_sync")
    exclude = ("password",)


@admin.register(models.Host)
class HostAdmin(admin.ModelAdmin):
    list_display = ("name", "manager", "cluster", "address", "status")
    exclude = ("ssh_private_key", "ssh_password")


for model in (models.DataCenter, models.Cluster, models.StorageDomain, models.Tag, models.VM, models.Disk):
    admin.site.register(model, list_display=("name", "manager", "engine_id", "missing_since"))
