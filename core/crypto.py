"""Encryption at rest for credentials (engine passwords, SSH keys and passwords)."""

from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@cache
def _fernet(key: str) -> Fernet:
    return Fernet(key.encode())


def _key() -> str:
    if not settings.CREDENTIALS_KEY:
        from core.secrets import missing_key_message

        raise ImproperlyConfigured(missing_key_message("CREDENTIALS_KEY"))
    return settings.CREDENTIALS_KEY


def encrypt(plain: str) -> str:
    return _fernet(_key()).encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(_key()).decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError(
            "A stored credential cannot be decrypted: CREDENTIALS_KEY (or DATA_DIR/credentials.key) "
            "is not the key it was encrypted with"
        ) from None


class EncryptedTextField(models.TextField):
    """A text column that holds only Fernet ciphertext; Python code sees the plain text.

    An empty value stays empty so "no credential" is distinguishable without decrypting.
    """

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if not value:
            return value
        return encrypt(value)
