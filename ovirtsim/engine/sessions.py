"""SSO sessions: the admin's login, bearer tokens, logout."""

import secrets

from ovirtsim.engine.core import EngineCore
from ovirtsim.errors import EngineFault


class Sessions(EngineCore):
    def login(self, username: str, password: str) -> str:
        user, _, domain = username.partition("@")
        if (
            self.faults.reject_logins
            or user != "admin"
            or domain.lower() not in ("internal", "internal-authz")
            or (not secrets.compare_digest(password, self.password))
        ):
            raise EngineFault(
                401,
                f"Cannot authenticate user '{username}': The username or password is incorrect..",
                reason="access_denied",
            )
        token = secrets.token_urlsafe(48)
        self.tokens[token] = username
        return token

    def check_token(self, token: str) -> bool:
        return token in self.tokens

    def logout(self, token: str) -> None:
        self.tokens.pop(token, None)
