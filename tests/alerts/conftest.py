"""A real SMTP sink (aiosmtpd) and a real HTTP webhook receiver, each on a free local port."""

import hashlib
import hmac
import json
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import free_port

SECRET = "s3cret-shared-with-the-receiver"


class Sink:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content)
        self.messages.append(
            {
                "to": envelope.rcpt_tos,
                "subject": message["Subject"],
                "body": message.get_payload(decode=True).decode(),
            }
        )
        return "250 OK"


@pytest.fixture
def smtp_sink(settings):
    """Django's SMTP backend pointed at a local aiosmtpd server; `.messages` holds what it got."""
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    settings.EMAIL_USE_TLS = False
    yield sink
    controller.stop()


class Receiver:
    def __init__(self, fail_first: int = 0):
        self.fail_first = fail_first
        self.calls = []  # (status answered, signature valid, body)
        self.hosts = []  # the Host header of each request
        self.redirect_to = ""  # answer 302 with this Location instead
        self.url = ""


def start_receiver():
    """A webhook receiver that checks each body's HMAC; `fail_first` calls answer 503. Returns it and its server."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            receiver.hosts.append(self.headers["Host"])
            receiver.calls.append((200, False, None))
            self.send_response(200)
            self.end_headers()

        def do_POST(self):
            receiver.hosts.append(self.headers["Host"])
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if receiver.redirect_to:
                receiver.calls.append((302, None, json.loads(body)))
                self.send_response(302)
                self.send_header("Location", receiver.redirect_to)
                self.end_headers()
                return
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            valid = hmac.compare_digest(self.headers.get("X-Signature", ""), expected)
            status = 503 if len(receiver.calls) < receiver.fail_first else (200 if valid else 401)
            receiver.calls.append((status, valid, json.loads(body)))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/backup"
    return receiver, server


@pytest.fixture
def webhook(settings):
    """A receiver on 127.0.0.1, which webhooks may call only because the admin's allow list says so."""
    settings.ALERT_WEBHOOK_ALLOW = ["127.0.0.1"]
    receiver, server = start_receiver()
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture
def second_webhook(webhook):
    receiver, server = start_receiver()
    yield receiver
    server.shutdown()
    server.server_close()
