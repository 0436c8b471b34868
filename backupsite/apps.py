from django.apps import AppConfig


class BackupsiteConfig(AppConfig):
    name = "backupsite"
    verbose_name = "Site"
