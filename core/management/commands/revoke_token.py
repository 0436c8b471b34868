from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from core.models import ApiToken
from core.tokens import revoke_token


class Command(BaseCommand):
    help = "Revoke an API token, named by its prefix (the key's first 8 characters, shown in lists)."

    def add_arguments(self, parser):
        parser.add_argument("prefix")

    def handle(self, *args, prefix: str, **options):
        token = ApiToken.objects.select_related("user").filter(prefix=prefix[:8]).first()
        if token is None:
            raise CommandError(f"No token with the prefix {prefix!r}.")
        revoke_token(token=token)
        record_command(action="token_revoked", target=token, user=token.user.username)
        self.stdout.write(f"Revoked token {token.prefix} ({token.name}) of {token.user.username}.")
