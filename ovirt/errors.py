"""Errors of the engine client, worded for the person who configured the engine."""

import http.client
import re
import socket
import ssl

from core.errors import OperatorError


class EngineError(OperatorError):
    """A failure talking to an engine, or a refusal from it, worded for people."""


def fault_text(error: BaseException) -> str:
    """The engine's own reason for a fault (its `detail`), else the error in words (`failure_words`).
    A refusal for want of a permission (403) also names the permit the action needs."""
    fault = getattr(error, "fault", None)
    if fault is not None and fault.detail:
        text = fault.detail.strip("[]")
        if getattr(error, "code", None) == 403:
            text = f"{text.rstrip('.')}. {permit_hint(text)}"
        return text
    return failure_words(error)


# The permit (ActionGroup) each action needs, by the words of the engine's "Cannot ACTION TYPE."
# (AppErrors: VAR__ACTION__*, VAR__TYPE__*), as ActionType and the commands' permission checks say.
PERMIT_OF_ACTION = {
    "create Snapshot": "manipulate_vm_snapshots",
    "remove Snapshot": "manipulate_vm_snapshots",
    "transfer Virtual Disk": "edit_disk_properties",
    "backup VM": "backup_disk",
    "stop VM backup": "backup_disk",
    "remove Checkpoint": "backup_disk",
    "add Virtual Disk": "create_disk",
    "remove Virtual Disk": "delete_disk",
    "attach Virtual Disk": "configure_vm_storage",
    "edit Virtual Disk": "configure_vm_storage",
    "import VM": "import_export_vm",
    "add VM": "create_vm",
    "remove VM": "delete_vm",
    "edit VM": "edit_vm_properties",
    "run VM": "run_vm",
}


def permit_hint(refusal: str) -> str:
    """What to do about the engine's 403 "Cannot ACTION TYPE. User is not authorized to perform this action." """
    action = re.match(r"Cannot (.+?)\.", refusal)
    permit = PERMIT_OF_ACTION.get(action[1]) if action else None
    if permit:
        return f"The engine user's roles lack the {permit} permit: add it to the user's role on the engine."
    return "The engine user's roles lack a permit this needs; the manager's connection test names the missing ones."


# What libcurl's error codes (in ovirtsdk4's errors) mean, in words.
_CURL_WORDS = {
    5: "its proxy's name does not resolve",
    6: "its host name does not resolve",
    7: "connection refused",
    28: "no answer in time (timed out)",
    35: "the TLS handshake failed",
    52: "it closed the connection without answering",
    55: "the connection was reset",
    56: "the connection was reset",
    60: "its certificate is not signed by the configured CA",
}
# libcurl codes that mean the engine (or the path to it) went away, not that it refused something.
_CURL_LOST = {7, 28, 52, 55, 56}
# ovirtsdk4 puts pycurl's own tuples, object repr and all, in its messages:
# "Failed to read response: [(<pycurl.Curl object at 0x5624...>, 7, 'Failed to connect to ...')]"
# or pycurl.error's own text: "Error while sending HTTP request: (7, 'Failed to connect to ...')".
_CURL_TUPLE = re.compile(r"\((?:<pycurl\.Curl object at 0x[0-9a-fA-F]+>, )?(\d+), '([^']*)'\)")
# imageio's client when a connection ends before the bytes it asked for arrived.
_SHORT = re.compile(r"Expected (\d+) bytes, got (\d+) bytes")
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def _words_and_lost(error: BaseException) -> tuple[str, str]:
    """(the error in one clause, "gone" when it says the engine or its imageio went away, "failed"
    when either answered with a server error, else "")."""
    if isinstance(error, OperatorError):
        return str(error).rstrip("."), ""  # already in words (ours)
    # The most telling error is often the cause under a wrapper (imageio re-raises, urllib wraps).
    for e in _chain(error):
        if isinstance(e, ConnectionRefusedError):
            return "connection refused", "gone"
        if isinstance(e, (ConnectionResetError, BrokenPipeError)):
            return "the connection was reset", "gone"
        if isinstance(e, (TimeoutError, socket.timeout)):
            return "no answer in time (timed out)", "gone"
        if isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            return "the connection was closed in the middle of the transfer", "gone"
        if isinstance(e, http.client.RemoteDisconnected):
            return "it closed the connection without answering", "gone"
        if isinstance(e, http.client.IncompleteRead):
            return f"the connection closed after {_mib(len(e.partial))} of an answer", "gone"
    text = str(error)
    if match := _SHORT.search(text):
        expected, got = int(match.group(1)), int(match.group(2))
        return f"the connection closed after {_mib(got)} of a {_mib(expected)} request", "gone"
    if match := _CURL_TUPLE.search(text):
        code, message = int(match.group(1)), match.group(2)
        return _CURL_WORDS.get(code, message.rstrip(".")), "gone" if code in _CURL_LOST else ""
    if "isn't the expected XML" in text and "text/html" in text:
        # The SDK's words when a web server in front of the engine answers for it (Apache's 503 page
        # while the engine restarts): the engine itself did not answer.
        return "the engine's web server answered with an error page, not the API (is the engine restarting?)", "failed"
    code = getattr(error, "code", None)
    if isinstance(code, int) and code >= 500:
        message = (getattr(error, "message", "") or text).strip().rstrip(".")
        return f"it answered HTTP {code} ({message})", "failed"
    if isinstance(error, OSError) and error.strerror:
        why = error.strerror
        return (why[0].lower() + why[1:] if why[1:2].islower() else why), ""
    return _OBJECT_REPR.sub("", text).strip().rstrip(".") or type(error).__name__, ""


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        # `raise ... from None` says the context is not the cause.
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)


def failure_words(error: BaseException) -> str:
    """An error from ovirtsdk4, ovirt_imageio, pycurl or the socket under them, in words for people:
    "connection refused", "the connection closed after 16 MiB of a 20 MiB request", "it answered
    HTTP 503 (...)"; never an object's repr. The one place these errors become words."""
    return _words_and_lost(error)[0]


def engine_trouble(error: BaseException) -> str:
    """ "gone" when the error says the engine (or the imageio serving a transfer) stopped answering
    (refused or reset connections, timeouts, a transfer cut short), "failed" when it answered with a
    server error (5xx), "" otherwise (a refusal of the request, a local failure)."""
    return _words_and_lost(error)[1]


def freeze_failed(fault: str) -> bool:
    """The guest could not freeze its filesystems (no agent, or it refused): no retry cures that."""
    return "freeze" in fault.lower()


# What the engine's 409 says when the object is in a state that waiting does not change (its
# validation messages, AppErrors.properties, and the simulator's words for the same): a VM that runs
# or does not, a disk that is illegal or has snapshots, no room, no host up, an unsupported request,
# a guest that cannot freeze. The messages hold VM and disk names too, so what says the object is
# busy is looked for first and wins: a lock on a VM named "freezer" is still waited out.
_BUSY = ("lock", "in progress", "being", "currently", "during", "try again", "wait")
_LASTING = (
    "freeze",
    " is running",
    "is not running",
    "illegal",
    "has snapshots",
    "already exists",
    "already attached",
    "low disk space",
    "not supported",
    "active snapshot of a vm cannot be removed",
    "previewing a snapshot",
    "incremental backup is disabled",
    "is not up",
    "no host is up",
    "no active host",
    "must be larger",
    "read-only",
    "is not a data domain",
    "only applicable for data domains",
    "name is in use",
)


def lasting_refusal(fault: str) -> bool:
    """A 409 that no retry cures: raised at once instead of after half a minute of retries."""
    text = fault.lower()
    if any(words in text for words in _BUSY):
        return False
    return any(words in text for words in _LASTING)
