import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from core import roles


class Command(BaseCommand):
    help = (
        "Create the first admin user if no admin exists. The password is read from "
        "ADMIN_PASSWORD or generated and printed once."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("ADMIN_USERNAME", "admin"))

    def handle(self, *args, username: str, **options):
        User = get_user_model()
        if (
            User.objects.filter(is_superuser=True, is_active=True).exists()
            or User.objects.filter(groups__name=roles.ADMIN, is_active=True).exists()
        ):
            self.stdout.write("An admin user exists already; nothing to do.")
            return
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email="", password=password)
        roles.set_role(user, roles.ADMIN)
        if os.environ.get("ADMIN_PASSWORD"):
            self.stdout.write(f"Created admin user {username!r} with the password from ADMIN_PASSWORD.")
        else:
            self.stdout.write(
                self.style.WARNING(
                    f"Created admin user {username!r} with password: {password}\n"
                    "This is shown once; change it under Settings."
                )
            )
