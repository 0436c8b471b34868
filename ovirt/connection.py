"""Connecting to an engine: connections, the connection test, and its CA certificate.

Every call goes through ovirtsdk4. Errors are turned into sentences an administrator can act
on, naming which step failed: reaching the host, TLS verification, authentication,
permissions, or the API version.
"""

import ipaddress
import logging
import re
import socket
import ssl
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlparse

import ovirtsdk4 as sdk
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ovirt.errors import EngineError, fault_text
from ovirt.polling import RETRIED_STATUSES, retry_delays

log = logging.getLogger("ovirt")

API_PATH = "/ovirt-engine/api"
TIMEOUT = 30
MIN_API = (4, 2)

# What each engine API version allows, by name: label and minimum (major, minor). The layers
# above declare their features here (the strategies app does, when the app registry is ready),
# so a connection test can say what an engine allows without this layer knowing them.
API_FEATURES: dict[str, tuple[str, tuple[int, int]]] = {}
# What each feature (a strategy, restore) needs of the engine user: label and permits (the engine's
# names, as roles' permits list them); and of the hosts: label and minimum versions by component
# ("vdsm", "libvirt": what the API reports of a host).
NEEDED_PERMITS: dict[str, tuple[str, tuple[str, ...]]] = {}
HOST_MINIMUMS: dict[str, tuple[str, dict[str, tuple[int, ...]]]] = {}


def declare_feature(
    name: str,
    label: str,
    min_api_version: tuple[int, int],
    *,
    permits: tuple[str, ...] = (),
    host_versions: dict[str, tuple[int, ...]] | None = None,
) -> None:
    API_FEATURES[name] = (label, min_api_version)
    declare_permits(name, label, permits)
    if host_versions:
        HOST_MINIMUMS[name] = (label, dict(host_versions))


def declare_permits(name: str, label: str, permits: tuple[str, ...]) -> None:
    """`label` (a strategy, restore) needs the engine user to hold these permits."""
    if permits:
        NEEDED_PERMITS[name] = (label, tuple(permits))


def host_versions(host) -> dict[str, tuple[int, ...]]:
    """What the API reports of a host's versions: {"vdsm": (4, 50, 5, 1), "libvirt": (9, 0, 0, 0)}
    (`version` is vdsm's, `libvirt_version` libvirt's); a component it does not report is absent."""
    found = {}
    for component, version in (("vdsm", host.version), ("libvirt", host.libvirt_version)):
        if version is not None and version.major is not None:
            found[component] = tuple(v or 0 for v in (version.major, version.minor, version.build, version.revision))
    return found


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(str(v) for v in version)


def version_shortfall(versions: dict[str, tuple[int, ...]], minimums: dict[str, tuple[int, ...]]) -> str:
    """ "vdsm 4.30.46.0 is older than 4.40, libvirt ..." for what falls short; unreported versions are
    not held against a host (an older engine does not report them); "" when nothing falls short."""
    short = [
        f"{component} {dotted(versions[component])} is older than {dotted(minimum)}"
        for component, minimum in minimums.items()
        if component in versions and versions[component] < minimum
    ]
    return ", ".join(short)


def features_for_api_version(major: int, minor: int) -> list[str]:
    """The declared features an engine of this API version allows."""
    return [name for name, (_, needs) in API_FEATURES.items() if (major, minor) >= needs]


HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def host_problem(host: str) -> str:
    """Why `host` cannot be an engine's host name or address; empty when it can."""
    try:
        ipaddress.ip_address(host)
        return ""
    except ValueError:
        pass
    if len(host) > 253 or any(len(label) > 63 for label in host.split(".")):
        return "The host name is too long to be a DNS name (253 characters, 63 per label)."
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        ascii_host = ""
    if not ascii_host or not all(HOST_LABEL.match(label) for label in ascii_host.rstrip(".").split(".")):
        return f"{host!r} is not a host name: use letters, digits, hyphens and dots, or an IP address."
    return ""


def normalize_api_url(raw: str) -> tuple[str, str]:
    """Turn what a person typed into https://HOST[:PORT]/ovirt-engine/api, saying what was assumed."""
    text = (raw or "").strip()
    if not text:
        raise ValueError("Enter the engine's host name or API URL.")
    assumed = []
    if "://" not in text:
        text = "https://" + text
        assumed.append("https://")
    parsed = urlparse(text)
    if parsed.scheme != "https":
        raise ValueError("The engine API is served over https:// only.")
    if not parsed.hostname:
        raise ValueError(f"{raw!r} names no host.")
    try:
        _ = parsed.port
    except ValueError:
        raise ValueError(f"{raw!r} has no valid port after the host name.") from None
    problem = host_problem(parsed.hostname)
    if problem:
        raise ValueError(problem)
    path = parsed.path.rstrip("/")
    if path in ("", "/"):
        path = API_PATH
        assumed.append(f"the path {API_PATH}")
    elif path == "/ovirt-engine":
        path = API_PATH
        assumed.append("the path /api after /ovirt-engine")
    if path != API_PATH:
        raise ValueError(f"The engine API URL must end in {API_PATH} (got path {path!r}).")
    url = f"https://{parsed.netloc}{path}"
    if len(url) > 300:
        raise ValueError("The API URL is longer than 300 characters.")
    note = f"Assumed {' and '.join(assumed)}: {url}" if assumed else ""
    return url, note


def pki_url(api_url: str) -> str:
    parsed = urlparse(api_url)
    return f"https://{parsed.netloc}/ovirt-engine/services/pki-resource?resource=ca-certificate&format=X509-PEM-CA"


@dataclass
class Certificate:
    pem: str
    subject: str
    fingerprint: str  # SHA-256, colon separated


def describe_certificate(pem: str) -> Certificate:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise EngineError("This is not a PEM certificate (-----BEGIN CERTIFICATE----- ...).") from None
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return Certificate(
        pem=pem,
        subject=cert.subject.rfc4514_string(),
        fingerprint=":".join(digest[i : i + 2] for i in range(0, len(digest), 2)),
    )


def fetch_ca_certificate(api_url: str) -> Certificate:
    """Download the engine's CA from its pki-resource URL without verifying (trust on first use).

    The caller must show the fingerprint and have a person confirm it before storing it.
    """
    import urllib.error
    import urllib.request

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(pki_url(api_url), context=context, timeout=TIMEOUT) as response:
            pem = response.read().decode()
    except (urllib.error.URLError, OSError) as e:
        raise EngineError(f"Cannot fetch the CA certificate from {pki_url(api_url)}: {_reason(e)}") from None
    return describe_certificate(pem)


def _reason(e: Exception) -> str:
    reason = getattr(e, "reason", None) or e
    return str(getattr(reason, "strerror", None) or reason)


class RetryingConnection(sdk.Connection):
    """An ovirtsdk4 connection that asks a read (GET) again when the engine answers it with a server
    error (RETRIED_STATUSES), under the engine client's one retry policy (ovirt.polling). A read
    changes nothing, so asking again is always safe, and every caller (a poll, a list, a lookup in a
    cleanup step) gets it without saying so. Requests that change something are retried by their
    callers, which know whether asking twice does harm (`retry_engine`)."""

    def wait(self, context, failed_auth=False):
        response = super().wait(context, failed_auth)
        request = context[3]
        for delay in retry_delays():
            if request.method != "GET" or response.code not in RETRIED_STATUSES:
                break
            log.warning("GET %s: the engine answered HTTP %s; retrying in %.0fs", request.path, response.code, delay)
            time.sleep(delay)
            response = super().wait(self.send(request), failed_auth)
        return response


@contextmanager
def connect(manager, *, timeout: int = TIMEOUT):
    """An ovirtsdk4 connection to the manager, logged out and closed afterwards.

    `manager` is anything with `api_url`, `username`, `password`, `ca_certificate` and
    `verify_tls` (an inventory Manager row)."""
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as ca:
        options = {
            "url": manager.api_url,
            "username": manager.username,
            "password": manager.password,
            "timeout": timeout,
            "connections": 4,
        }
        if manager.verify_tls:
            if manager.ca_certificate.strip():
                ca.write(manager.ca_certificate)
                ca.flush()
                options["ca_file"] = ca.name
        else:
            options["insecure"] = True
        connection = RetryingConnection(**options)
        # imageio clients verify the data plane with the same CA (None: system CAs or insecure).
        connection.ca_file = options.get("ca_file")
        connection.verify_tls = manager.verify_tls
        try:
            yield connection
        finally:
            try:
                connection.close()
            except Exception:
                # Logging out of an engine that went away fails with curl's own error; that is never
                # the failure to tell (it used to replace the real one).
                pass


@dataclass
class Step:
    name: str
    ok: bool
    message: str
    warning: bool = False  # ok, but something people should know (a host too old for a strategy)


@dataclass
class ConnectionReport:
    steps: list[Step] = field(default_factory=list)
    version: str = ""
    strategies: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    @property
    def error(self) -> str:
        failed = next((s for s in self.steps if not s.ok), None)
        return failed.message if failed else ""

    def add(self, name: str, ok: bool, message: str, *, warning: bool = False) -> bool:
        self.steps.append(Step(name, ok, message, warning))
        return ok


def test_connection(manager) -> ConnectionReport:
    """Check each layer in turn and stop at the first that fails."""
    report = ConnectionReport()
    parsed = urlparse(manager.api_url)
    host, port = parsed.hostname, parsed.port or 443
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            if not report.add("connect", True, f"Reached {host}:{port}."):
                return report
            if manager.verify_tls:
                context = ssl.create_default_context(cadata=manager.ca_certificate or None)
                if not manager.ca_certificate.strip():
                    context.load_default_certs()
                try:
                    with context.wrap_socket(raw, server_hostname=host):
                        pass
                except ssl.SSLCertVerificationError as e:
                    report.add(
                        "tls",
                        False,
                        f"TLS verification failed: {e.verify_message}. The CA certificate "
                        "configured for this manager did not sign the engine's certificate "
                        "(or the host name does not match it).",
                    )
                    return report
                except ssl.SSLError as e:
                    report.add("tls", False, f"TLS handshake with {host}:{port} failed: {e.reason or e}.")
                    return report
                report.add("tls", True, "The engine's certificate is signed by the configured CA.")
            else:
                report.add("tls", True, "TLS verification is turned off for this manager (not recommended).")
    except socket.gaierror as e:
        report.add("connect", False, f"Cannot resolve {host}: {e.strerror}.")
        return report
    except ssl.SSLError as e:  # a CA text that does not parse
        report.add("tls", False, f"The CA certificate cannot be used: {e.reason or e}.")
        return report
    except OSError as e:
        report.add("connect", False, f"Cannot connect to {host}:{port}: {e.strerror or e}.")
        return report

    with connect(manager) as connection:
        try:
            connection.authenticate()
        except sdk.AuthError as e:
            report.add("authentication", False, f"Authentication as {manager.username} failed: {_sso_message(e)}")
            return report
        except sdk.Error as e:
            report.add("authentication", False, f"Authentication as {manager.username} failed: {e}")
            return report
        report.add("authentication", True, f"Logged in as {manager.username}.")
        try:
            api = connection.system_service().get()
            connection.system_service().vms_service().list(max=1)
        except sdk.AuthError:
            report.add(
                "permissions",
                False,
                f"{manager.username} may log in but may not read the engine's inventory; "
                "give it a role with read access to VMs (e.g. a backup or admin role).",
            )
            return report
        except sdk.Error as e:
            report.add("permissions", False, f"Reading the inventory failed: {e}")
            return report
        report.add("permissions", True, "The user can read the inventory.")
        version = api.product_info.version if api.product_info else None
        major, minor = (version.major or 0, version.minor or 0) if version else (0, 0)
        report.version = (version.full_version or f"{major}.{minor}") if version else "unknown"
        report.strategies = features_for_api_version(major, minor)
        if (major, minor) < MIN_API:
            report.add(
                "version",
                False,
                f"The engine's API is {major}.{minor}, older than {MIN_API[0]}.{MIN_API[1]}. "
                f"It allows only: {_labels(report.strategies)}.",
            )
            return report
        report.add("version", True, f"Engine {report.version}; possible strategies: {_labels(report.strategies)}.")
        _check_hosts(connection, report)
        _check_permits(connection, api, manager.username, report)
    return report


def _check_hosts(connection, report: ConnectionReport) -> None:
    """Name the hosts too old for a strategy the engine allows (a warning: other hosts may do)."""
    wanted = {name: HOST_MINIMUMS[name] for name in report.strategies if name in HOST_MINIMUMS}
    if not wanted:
        return
    try:
        hosts = connection.system_service().hosts_service().list()
    except sdk.Error as e:
        report.add("hosts", True, f"The hosts' versions could not be read: {fault_text(e)}", warning=True)
        return
    short = []
    for label, minimums in wanted.values():
        for host in hosts:
            shortfall = version_shortfall(host_versions(host), minimums)
            if shortfall:
                short.append(f"{label} cannot back up VMs on host {host.name}: {shortfall}")
    if short:
        report.add("hosts", True, "; ".join(short) + ". Update those hosts.", warning=True)
    else:
        report.add("hosts", True, f"Every host has the versions needed by: {_labels(list(wanted))}.")


def _check_permits(connection, api, username: str, report: ConnectionReport) -> None:
    """List what each strategy the engine allows (and restore) needs of the user's roles, naming
    the permits they lack, read as the engine exposes them: the authenticated user's permissions,
    their roles, and the roles' permits."""
    wanted = {n: v for n, v in NEEDED_PERMITS.items() if n in report.strategies or n not in API_FEATURES}
    if not wanted:
        return
    system = connection.system_service()
    try:
        user_id = api.authenticated_user.id if api.authenticated_user else None
        if user_id is None:
            raise EngineError("the engine did not say which user is logged in")
        permissions = system.users_service().user_service(user_id).permissions_service().list()
        roles = {p.role.id for p in permissions if p.role}
        held = {p.name for role in roles for p in system.roles_service().role_service(role).permits_service().list()}
    except (sdk.Error, EngineError) as e:
        why = fault_text(e) if isinstance(e, sdk.Error) else str(e)
        report.add("permits", True, f"The permits of {username} could not be read ({why}); not checked.", warning=True)
        return
    needs, lacking, usable = [], [], []
    for name, (label, permits) in wanted.items():
        missing = [p for p in permits if p not in held]
        needs.append(f"{label}: {', '.join(permits)}" + (f" (missing: {', '.join(missing)})" if missing else ""))
        lacking.extend(p for p in missing if p not in lacking)
        if not missing and name in report.strategies:
            usable.append(label)
    if lacking:
        # A user made for one strategy is a choice an administrator may make on purpose: the test fails
        # only when no strategy at all can back up with it, and warns otherwise, naming what cannot.
        report.add(
            "permits",
            bool(usable),
            f"The roles of {username} lack {', '.join(lacking)}. Needed: {'; '.join(needs)}. "
            + (f"Backups can run with: {', '.join(usable)}. " if usable else "No strategy can back up with them. ")
            + "Add the missing permits to the user's role on the engine (Administration > Configure > Roles), "
            "or give the user a role that has them.",
            warning=bool(usable),
        )
    else:
        report.add("permits", True, f"The roles of {username} hold every permit needed: {'; '.join(needs)}.")


def _labels(names: list[str]) -> str:
    return ", ".join(API_FEATURES[n][0] for n in names) or "none"


def _sso_message(error: Exception) -> str:
    text = str(error)
    marker = "Error during SSO authentication"
    if marker in text:
        text = text.split(":", 1)[-1].strip()
    return text.rstrip(".") + "."
