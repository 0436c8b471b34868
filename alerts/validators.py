from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email


def split_emails(value: str) -> list[str]:
    return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]


def validate_emails(value: str) -> None:
    """Comma-separated e-mail addresses, each one checked, the wrong ones named."""
    wrong = []
    for address in split_emails(value):
        try:
            validate_email(address)
        except ValidationError:
            wrong.append(address)
    if wrong:
        raise ValidationError(
            f"Not an e-mail address: {', '.join(wrong)}. Separate addresses with commas.", code="invalid_email"
        )


def validate_webhook_url(value: str) -> None:
    if not value:
        return
    if not value.lower().startswith(("http://", "https://")):
        raise ValidationError("Webhook URL must start with http:// or https://", code="invalid_scheme")
    try:
        URLValidator(schemes=["http", "https"])(value)
    except ValidationError:
        raise ValidationError(f"{value!r} is not a valid URL.", code="invalid_url") from None
