"""HTTPS front of the simulated engine: SSO, the PKI resource, the REST API v4 and a control API.

Requests are served by a thread each; the engine's state lock is taken only around state
reads and changes, never while data moves. The API's routes live in `ovirtsim.routes`
(one module per collection), the SSO in `ovirtsim.sso`, the control API in `ovirtsim.control`.
"""

import logging
import re
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import ovirtsdk4.types as types

from ovirtsim import control, sso
from ovirtsim.errors import EngineFault, bad_request
from ovirtsim.routes import Request, router
from ovirtsim.routes.permissions import required_permit
from ovirtsim.views import API, Views, to_xml

log = logging.getLogger("ovirtsim.http")

PKI_RESOURCE_PATH = "/ovirt-engine/services/pki-resource"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, each response would wait for
    # the client's delayed ACK (40 ms), which no real engine does.
    disable_nagle_algorithm = True
    server_version = "Apache"
    sys_version = ""

    def setup(self):
        super().setup()
        self.request.settimeout(300)
        self.handshake_failed = False
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.handshake_failed = True

    def handle(self):
        if self.handshake_failed:
            return
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, TimeoutError):
            pass

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, content_type: str = "application/xml", headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _fault(self, fault: EngineFault):
        body = to_xml(types.Fault(reason=fault.reason, detail=fault.detail))
        headers = {"WWW-Authenticate": 'Bearer realm="RESTAPI"'} if fault.status == 401 else None
        self._send(fault.status, body, headers=headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self):
        engine = self.server.engine
        if engine.faults.delay_ms:
            time.sleep(engine.faults.delay_ms / 1000)
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        # Matrix parameters of the last segment (`.../import;collapse_snapshots`), which the engine
        # reads where it reads query parameters (ParametersHelper), a query parameter winning.
        for param in filter(None, url.params.split(";")):
            name, _, value = param.partition("=")
            query.setdefault(name, value)
        body = self._body()
        path = url.path.rstrip("/") or "/"
        try:
            if path == sso.TOKEN_PATH:
                return self._send(*sso.issue_token(engine, body))
            if path in sso.LOGOUT_PATHS:
                return self._send(*sso.logout(engine, body, query))
            if path == PKI_RESOURCE_PATH:
                if query.get("resource") != "ca-certificate":
                    raise bad_request("Unknown PKI resource; use resource=ca-certificate")
                return self._send(200, self.server.ca_pem, "application/x-x509-ca-cert")
            if path.startswith(control.PREFIX):
                control.authenticate(engine, self.headers.get("Authorization", ""))
                return self._send(200, control.handle(engine, path, body), "application/json")
            if not path.startswith(API):
                raise EngineFault(404, f"Resource {path} was not found", reason="Not Found")
            engine.request_count += 1
            user = sso.authenticate(engine, self.headers.get("Authorization", ""))
            injected = injected_fault(engine, self.command, path)

            def act():
                route, params = router.match(self.command if self.command != "HEAD" else "GET", path)
                needed = required_permit(self.command, path, body)
                if needed:
                    engine.check_permit(user, *needed)
                return route(Request(self, engine, self.server.views, params, query, body, user=user))

            if injected and engine.faults.fail_requests.get("after"):
                # The engine did the work and its answer was lost on the way back (a proxy in front
                # of it timing out): the client sees the failure of a request that took effect.
                act()
            if injected == 503:
                return self._send(503, SERVICE_UNAVAILABLE, "text/html; charset=iso-8859-1")
            if injected:
                raise injected
            result = act()
            if result is None:
                return self._send(200, b"")
            status, payload = result if isinstance(result, tuple) else (200, result)
            return self._send(status, payload)
        except EngineFault as fault:
            return self._fault(fault)
        except Exception as e:  # a bug in the simulator: answer like the engine's 500
            log.exception("request %s %s failed", self.command, self.path)
            return self._fault(EngineFault(500, f"Internal error: {e}", reason="Operation Failed"))

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch


# What Apache in front of the engine answers while the engine behind it does not (a restart, an
# overloaded JBoss): its own page, not the engine's <fault>.
SERVICE_UNAVAILABLE = (
    b'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n<title>503 Service Unavailable</title>\n'
    b"</head><body>\n<h1>Service Unavailable</h1>\n<p>The server is temporarily unable to service your\n"
    b"request due to maintenance downtime or capacity\nproblems. Please try again later.</p>\n</body></html>\n"
)
# The engine's words for the object a refused request names (AppErrors: "Cannot ${action} ${type}.").
ENTITY_NAMES = {
    "vms": "VM",
    "snapshots": "Snapshot",
    "disks": "Virtual Disk",
    "diskattachments": "Virtual Disk",
    "imagetransfers": "Image Transfer",
    "backups": "VM Backup",
    "checkpoints": "VM Checkpoint",
    "storagedomains": "Storage",
    "hosts": "Host",
    "clusters": "Cluster",
    "tags": "Tag",
}
VERBS = {"GET": "get", "POST": "add", "PUT": "edit", "DELETE": "remove"}


def injected_fault(engine, method: str, path: str) -> "EngineFault | int | None":
    """The failure the `fail_requests` switch picks for this request, if any: 503 (Apache's page,
    the caller sends it), or an EngineFault for 409 (the engine's "Related operation is currently
    in progress", which clients retry) and 500 (an internal engine error). Counted by status."""
    wanted = engine.faults.fail_requests
    if not wanted or method not in wanted.get("methods", list(VERBS)):
        return None
    if wanted.get("path") and not re.search(wanted["path"], path):
        return None  # only the requests whose path matches (a regular expression): one call's 409s
    with engine.store.lock:
        if wanted.get("times") is not None:  # only the next N matching requests
            if wanted["times"] <= 0:
                return None
            wanted["times"] -= 1
        elif engine.fault_random.random() >= float(wanted.get("rate", 0)):
            return None
        status = int(wanted.get("status", 503))
        engine.failed_requests[status] += 1
    if status == 503:
        return 503
    if status == 500:
        return EngineFault(500, "[Internal Engine Error]")
    parts = [p for p in path.removeprefix(API).split("/") if p]
    named = [p for p in parts if p in ENTITY_NAMES]
    entity = ENTITY_NAMES[named[-1]] if named else "Entity"
    action = VERBS[method]
    if method == "POST" and parts and parts[-1] not in ENTITY_NAMES and len(parts) >= 3:
        action = parts[-1]  # an action on an object: /imagetransfers/ID/finalize, /vms/ID/start
    return EngineFault(
        409, f"[Cannot {action} {entity}. Related operation is currently in progress. Please try again later.]"
    )


class EngineHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, engine, *, cert_file, key_file, ca_file):
        super().__init__(address, Handler)
        self.engine = engine
        self.views = Views(engine)
        self.ca_pem = Path(ca_file).read_bytes()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        # The handshake happens in each request's thread, so a slow client cannot stall accept().
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        thread.start()
        return thread
