from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from core.audit import record_command
from core.tokens import MAX_DAYS, issue_token


class Command(BaseCommand):
    help = "Create an API token for a user and print its key (shown this once; only its hash is kept)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line", help="what the token is for")
        parser.add_argument(
            "--days", type=int, default=None, help=f"how long it lasts, 1 to {MAX_DAYS} (default: API_TOKEN_DAYS)"
        )

    def handle(self, *args, username: str, name: str, days: int | None, **options):
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user {username!r}.")
        try:
            token, key = issue_token(user=user, name=name, days=days)
        except ValueError as e:
            raise CommandError(str(e)) from None
        record_command(action="token_created", target=token, user=username)
        until = f"until {token.expires:%Y-%m-%d %H:%M} UTC" if token.expires else "without expiry"
        self.stderr.write(f"Token {token.prefix} for {username}, valid {until}. Its key, shown this once:")
        self.stdout.write(key)
