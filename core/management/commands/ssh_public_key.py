from django.core.management.base import BaseCommand

from core.ssh import site_key


class Command(BaseCommand):
    help = (
        "Print the site's SSH public key (made at first use), for administrators to add to root's "
        "authorized_keys on each hypervisor host."
    )

    def handle(self, *args, **options):
        self.stdout.write(site_key().public_key)
