"""SSH (paramiko) to hypervisor hosts and to guests: keys, pinned host keys, connections, errors in words."""

import base64
import hashlib
import io
import socket
from dataclasses import dataclass

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SITE_KEY_COMMENT = "ovirt-backup-site"


@dataclass
class SshResult:
    ok: bool
    message: str


def load_private_key(text: str) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise ValueError("The SSH private key is not an unencrypted OpenSSH/PEM Ed25519, ECDSA or RSA key.")


def normalize_private_key(text: str) -> str:
    """A pasted key as stored ("" for none); ValueError when it is not a key we can use."""
    text = text.strip()
    if not text:
        return ""
    load_private_key(text + "\n")
    return text + "\n"


def host_key_text(key: paramiko.PKey) -> str:
    """A host key as a known_hosts line has it after the host name: "ssh-ed25519 AAAA..."."""
    return f"{key.get_name()} {key.get_base64()}"


def parse_host_key(host_key: str) -> paramiko.PKey:
    """ValueError unless `host_key` is "TYPE BASE64" of a key type paramiko knows."""
    try:
        entry = paramiko.hostkeys.HostKeyEntry.from_line(f"x {host_key}")
    except (paramiko.SSHException, paramiko.hostkeys.InvalidHostKey, ValueError, TypeError) as e:
        raise ValueError(f"not an SSH host key: {e}") from None
    if entry is None or entry.key is None:
        raise ValueError("not an SSH host key")
    return entry.key


def fingerprint(host_key: str) -> str:
    key = parse_host_key(host_key)
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def server_host_key(client: paramiko.SSHClient) -> str:
    return host_key_text(client.get_transport().get_remote_server_key())


@dataclass(frozen=True)
class KeyPair:
    private_key: str  # OpenSSH PEM
    public_key: str  # an authorized_keys line: "ssh-ed25519 AAAA... comment"


def generate_key_pair(comment: str = SITE_KEY_COMMENT) -> KeyPair:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return KeyPair(private, f"{public.decode()} {comment}")


def site_key() -> KeyPair:
    """The site's SSH key pair, made at first use. Concurrent first uses (several workers starting
    at once) all end with the one row that won the insert."""
    from core.models import SiteSshKey

    row = SiteSshKey.objects.filter(pk=1).first()
    if row is None:
        fresh = generate_key_pair()
        # get_or_create retries the read when another process's insert of pk 1 won.
        row, _ = SiteSshKey.objects.get_or_create(
            pk=1, defaults={"private_key": fresh.private_key, "public_key": fresh.public_key}
        )
    return KeyPair(row.private_key, row.public_key)


def connect_ssh(
    address: str,
    *,
    port: int,
    user: str,
    private_key: str = "",
    password: str = "",
    host_key: str = "",
    timeout: float = 15,
) -> paramiko.SSHClient:
    """Log in; with `host_key` the server must present exactly that key. Without it the first key
    seen is trusted (the caller stores `server_host_key(client)` and passes it from then on)."""
    client = paramiko.SSHClient()
    if host_key:
        try:
            known = parse_host_key(host_key)
        except ValueError:
            raise ValueError(
                f"The stored SSH host key of {address} is not a valid key; clear it to learn it again."
            ) from None
        client.get_host_keys().add(_known_hosts_name(address, port), known.get_name(), known)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
    else:
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    key = load_private_key(private_key) if private_key else None
    client.connect(
        address,
        port=port,
        username=user,
        pkey=key,
        password=password or None,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
        allow_agent=False,
        look_for_keys=False,
    )
    return client


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def connection_problem(error: Exception, where: str) -> str:
    """What failed opening SSH to `where`, in plain words."""
    if isinstance(error, ValueError):
        return str(error)
    if isinstance(error, socket.gaierror):
        return f"Cannot resolve the address of {where}: {error.strerror}."
    if isinstance(error, paramiko.BadHostKeyException):
        return (
            f"The SSH host key of {where} changed: it is {fingerprint(host_key_text(error.key))}, "
            f"{fingerprint(host_key_text(error.expected_key))} was stored. If the machine was reinstalled, "
            "clear its stored host key; otherwise something else answers at that address."
        )
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError):
        reasons = sorted({getattr(e, "strerror", None) or str(e) for e in error.errors.values()})
        return f"Cannot open SSH to {where}: {', '.join(reasons)} (is sshd running there, on that port?)."
    if isinstance(error, paramiko.AuthenticationException):
        return f"SSH authentication as {where} failed: the key or password was refused."
    return f"Cannot open SSH to {where}: {getattr(error, 'strerror', None) or error}."
