from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from core.ssh import normalize_private_key
from inventory.models import Host
from inventory.ssh import credentials_label


def find_host(name: str) -> Host:
    """A host by name, or MANAGER/NAME where several managers have a host of that name."""
    manager_name, _, host_name = name.rpartition("/")
    hosts = Host.objects.select_related("manager").filter(name=host_name, missing_since=None)
    if manager_name:
        hosts = hosts.filter(manager__name=manager_name)
    found = list(hosts[:10])
    if not found:
        known = ", ".join(Host.objects.filter(missing_since=None).order_by("name").values_list("name", flat=True)[:20])
        raise CommandError(f"No host named {name!r}. Hosts: {known or 'none (sync a manager first)'}.")
    if len(found) > 1:
        names = ", ".join(f"{h.manager.name}/{h.name}" for h in found)
        raise CommandError(f"Several hosts are named {name!r}: give MANAGER/HOST, one of {names}.")
    return found[0]


class Command(BaseCommand):
    help = (
        "Set the SSH login of a hypervisor host: the user, and its own private key or the site key "
        "(`manage.py ssh_public_key`). Without --private-key-file or --site-key the stored key is kept."
    )

    def add_arguments(self, parser):
        parser.add_argument("host", help="the host's name, or MANAGER/HOST")
        parser.add_argument("--user", required=True, help="the user to log in as, e.g. root")
        key = parser.add_mutually_exclusive_group()
        key.add_argument("--private-key-file", type=Path, help="an unencrypted OpenSSH/PEM private key for this host")
        key.add_argument("--site-key", action="store_true", help="drop the host's own key and password")

    def handle(self, *args, host, user, private_key_file, site_key, **options):
        target = find_host(host)
        user = user.strip()
        if not user or any(c.isspace() for c in user) or len(user) > Host._meta.get_field("ssh_user").max_length:
            raise CommandError(f"{user!r} is not a user name: one word, at most 100 characters.")
        changed = ["ssh_user"]
        target.ssh_user = user
        if private_key_file is not None:
            try:
                text = private_key_file.read_text()
            except (OSError, UnicodeDecodeError) as e:
                raise CommandError(
                    f"Cannot read the private key file {private_key_file}: {getattr(e, 'strerror', None) or e}"
                ) from None
            try:
                target.ssh_private_key = normalize_private_key(text)
            except ValueError as e:
                raise CommandError(f"{private_key_file}: {e}") from None
            if not target.ssh_private_key:
                raise CommandError(f"{private_key_file} is empty.")
            target.ssh_password = ""
            changed += ["ssh_private_key", "ssh_password"]
        elif site_key:
            target.ssh_private_key = target.ssh_password = ""
            changed += ["ssh_private_key", "ssh_password"]
        # Only these fields: a sync may be writing the engine's facts into the row meanwhile.
        target.save(update_fields=changed)
        record_command(action="host_changed", target=target, fields=sorted(changed))
        self.stdout.write(f"{target.name}: logs in as {target.ssh_user} with {credentials_label(target)}.")
