"""The engine's SSO as a client meets it: the OAuth token endpoint, logout, and the
credentials every API request must carry (a bearer token, or basic auth)."""

import base64
import json
import time
from urllib.parse import parse_qs

from ovirtsim.errors import EngineFault

TOKEN_PATH = "/ovirt-engine/sso/oauth/token"
LOGOUT_PATHS = ("/ovirt-engine/services/sso-logout", "/ovirt-engine/sso/oauth/revoke")
JSON = "application/json"


def issue_token(engine, body: bytes) -> tuple[int, bytes, str]:
    """POST /ovirt-engine/sso/oauth/token (password grant): (status, JSON body, content type)."""
    form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
    if form.get("grant_type") != "password":
        return (
            400,
            json.dumps({"error_code": "unsupported_grant_type", "error": "The grant type is not supported."}).encode(),
            JSON,
        )
    username = form.get("username", "")
    try:
        token = engine.login(username, form.get("password", ""))
    except EngineFault as fault:
        return 400, json.dumps({"error_code": fault.reason, "error": fault.detail}).encode(), JSON
    payload = {
        "access_token": token,
        "scope": form.get("scope", "ovirt-app-api"),
        "token_type": "bearer",
        "exp": str(int(time.time() * 1000) + 3600 * 1000),
    }
    return 200, json.dumps(payload).encode(), JSON


def logout(engine, body: bytes, query: dict) -> tuple[int, bytes, str]:
    """sso-logout (or revoke): the token is forgotten."""
    form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
    engine.logout(form.get("token") or query.get("token", ""))
    return 200, b"{}", JSON


def authenticate(engine, authorization: str) -> str:
    """An API request's credentials (a token from the SSO, or a user's basic credentials): the
    login name of the user making it."""
    if authorization.startswith("Bearer "):
        login = engine.check_token(authorization[7:].strip())
        if login:
            return login
    if authorization.startswith("Basic "):
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            return engine.check_password(user, password)
        except (ValueError, EngineFault):
            pass
    raise EngineFault(
        401, "Authentication is required: log in through /ovirt-engine/sso/oauth/token", reason="Unauthorized"
    )
