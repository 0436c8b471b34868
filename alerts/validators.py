import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
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
    """An http(s) URL whose host resolves only to addresses webhooks may reach (checked again at each call)."""
    if not value:
        return
    if not value.lower().startswith(("http://", "https://")):
        raise ValidationError("Webhook URL must start with http:// or https://", code="invalid_scheme")
    try:
        URLValidator(schemes=["http", "https"])(value)
    except ValidationError:
        raise ValidationError(f"{value!r} is not a valid URL.", code="invalid_url") from None
    try:
        webhook_addresses(value)
    except WebhookTargetRefused as e:
        raise ValidationError(str(e), code="refused_target") from None


# Addresses a webhook may not reach unless an admin allows them: a webhook call made from the
# service's own network would let anyone who may edit alerts probe it (the delivery record told
# open ports from closed ones) or read a cloud's metadata service (169.254.169.254).
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: a site's own translators
ALLOW_SETTING = "ALERT_WEBHOOK_ALLOW"


class WebhookTargetRefused(Exception):
    """The webhook's host is not one the service may call; the message says why, in words."""


def blocked_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of non-public address this is ("a loopback address"...), or None for a public one."""
    embedded = None
    if isinstance(address, ipaddress.IPv6Address):
        if address in LOCAL_NAT64:
            return "a site-local NAT64 address"
        # 6to4 (2002:7f00:1::1) and Teredo carry an IPv4 address too, and may be routed to it.
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if embedded is not None:
        # ::ffff:127.0.0.1, 64:ff9b::7f00:1 and 2002:7f00:1:: reach the IPv4 address inside them.
        return blocked_kind(embedded)
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address in CGNAT:
        return "a carrier-grade NAT address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "an address that is not public"
    return None


def allow_list() -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """The host names and networks an admin allows webhooks to reach (ALERT_WEBHOOK_ALLOW)."""
    names, networks = set(), []
    for entry in getattr(settings, "ALERT_WEBHOOK_ALLOW", []):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if "/" in entry or not entry.replace("-", "").replace(".", "").isalnum():
                raise ImproperlyConfigured(
                    f"{ALLOW_SETTING}: {entry!r} is neither a network (10.1.2.0/24, 10.1.2.3) nor a host name."
                ) from None
            names.add(entry.lower().rstrip("."))
    return names, networks


def _allowed(address, networks) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def webhook_addresses(url: str) -> list[str]:
    """The addresses of the webhook's host, each checked: WebhookTargetRefused when any of them is
    loopback, private, link-local or otherwise not public and an admin has not allowed it.

    Every address the name resolves to is checked, and the caller connects to these very addresses:
    a name that answers with a public address now and a private one a moment later (DNS rebinding)
    cannot slip through between the check and the call. The message names the host, never the port,
    so a refused call tells nothing of what listens there."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise WebhookTargetRefused("The webhook URL names no host.")
    names, networks = allow_list()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookTargetRefused("The webhook URL's port is not a number from 0 to 65535.") from None
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        why = getattr(e, "strerror", None) or e
        raise WebhookTargetRefused(f"The webhook's host {host} cannot be resolved: {why}.") from None
    addresses = list(dict.fromkeys(info[4][0].split("%")[0] for info in found))
    if host.lower() in names:
        return addresses
    for text in addresses:
        address = ipaddress.ip_address(text)
        kind = blocked_kind(address)
        if kind and not _allowed(address, networks):
            where = host if text == host else f"{host} ({text})"
            raise WebhookTargetRefused(
                f"The webhook's host {where} is {kind}: webhooks may not reach loopback, private or "
                f"link-local addresses unless an admin allows them ({ALLOW_SETTING})."
            )
    return addresses
