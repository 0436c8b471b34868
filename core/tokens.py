"""API tokens: made with a key shown once, kept as a hash, expiring, revocable.

The header is the one DRF's own tokens used (`Authorization: Token <key>`), so clients keep
working once they are given a new key.
"""

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from core.models import ApiToken, hash_key

MAX_DAYS = 3650
PREFIX_LENGTH = 8
# last_used is for people reading the list; writing it on every request would make each API call a write.
LAST_USED_PRECISION = timedelta(minutes=1)


def issue_token(*, user, name: str, days: int | None = None) -> tuple[ApiToken, str]:
    """A new token for `user` and its key, which exists nowhere else: give it to the user now.

    `days` defaults to API_TOKEN_DAYS; 0 there means tokens do not expire unless asked.
    """
    if days is None:
        days = settings.API_TOKEN_DAYS or None
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise ValueError(f"A token lasts 1 to {MAX_DAYS} days.")
    now = timezone.now()
    for _ in range(5):
        prefix = secrets.token_hex(PREFIX_LENGTH // 2)
        key = f"{prefix}.{secrets.token_urlsafe(32)}"
        try:
            with transaction.atomic():
                token = ApiToken.objects.create(
                    user=user,
                    name=name,
                    prefix=prefix,
                    key_hash=hash_key(key),
                    created=now,
                    expires=now + timedelta(days=days) if days else None,
                )
            return token, key
        except IntegrityError:  # the same prefix drawn twice: draw again
            continue
    raise RuntimeError("Could not draw a free token prefix.")


def revoke_token(*, token: ApiToken) -> None:
    if token.revoked is None:
        token.revoked = timezone.now()
        token.save(update_fields=["revoked"])


def revoke_tokens_of_deactivated_user(sender, instance, **kwargs) -> None:
    """Receiver of the user model's post_save: a deactivated user's tokens are revoked, so that
    reactivating the account does not bring back keys that may have been handed on meanwhile."""
    if not instance.is_active:
        ApiToken.objects.filter(user=instance, revoked=None).update(revoked=timezone.now())


def find_token(key: str) -> ApiToken | None:
    # Keys made here are "<prefix>.<secret>"; DRF keys adopted by a migration are 40 hex digits.
    prefix = key[:PREFIX_LENGTH]
    token = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
    return token if token is not None and token.matches(key) else None


class TokenAuthentication(BaseAuthentication):
    """`Authorization: Token <key>`; an expired or revoked token is refused saying which it is."""

    keyword = "Token"

    def authenticate(self, request):
        words = get_authorization_header(request).split()
        if not words or words[0].lower() != self.keyword.lower().encode():
            return None
        if len(words) != 2:
            raise exceptions.AuthenticationFailed("Give the token as 'Authorization: Token <key>'.")
        try:
            key = words[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        token = find_token(key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        now = timezone.now()
        if token.revoked:
            raise exceptions.AuthenticationFailed(
                f"This token was revoked on {token.revoked:%Y-%m-%d %H:%M} UTC; create a new one."
            )
        if token.is_expired(now):
            raise exceptions.AuthenticationFailed(
                f"This token expired on {token.expires:%Y-%m-%d %H:%M} UTC; create a new one."
            )
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("This token's user is deactivated.")
        if token.last_used is None or now - token.last_used > LAST_USED_PRECISION:
            ApiToken.objects.filter(pk=token.pk).update(last_used=now)
        return token.user, token

    def authenticate_header(self, request) -> str:
        return self.keyword


class TokenScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema (and Swagger UI's Authorize button) describes the header."""

    target_class = TokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'An API token, as "Token <key>".',
        }
