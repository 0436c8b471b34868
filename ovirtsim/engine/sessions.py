"""SSO sessions and users: logins, bearer tokens, logout; users, their roles and the roles' permits.

Each user has roles granted system-wide (the simulator has no object-level permissions), and may do
what the union of their roles' permits allows. The admin holds the predefined SuperUser role, with
every permit. Permit names and ids are the engine's (ActionGroup), as `/roles/{id}/permits` lists them.
"""

import secrets

from ovirtsim.engine.core import EngineCore, new_id
from ovirtsim.errors import EngineFault, bad_request
from ovirtsim.permits import NOT_AUTHORIZED, PERMITS, SUPER_USER_ROLE


class Sessions(EngineCore):
    def login(self, username: str, password: str) -> str:
        """A bearer token for the user."""
        token = secrets.token_urlsafe(48)
        self.tokens[token] = self.check_password(username, password)
        return token

    def check_password(self, username: str, password: str) -> str:
        """The user's login name if the password is theirs; 401 as the SSO answers otherwise."""
        user = self._user_for_login(username)
        if self.faults.reject_logins or user is None or not secrets.compare_digest(password, user["password"]):
            raise EngineFault(
                401,
                f"Cannot authenticate user '{username}': The username or password is incorrect..",
                reason="access_denied",
            )
        return user["login"]

    def check_token(self, token: str) -> str | None:
        """The login name a token was issued to, or None."""
        return self.tokens.get(token)

    def logout(self, token: str) -> None:
        self.tokens.pop(token, None)

    # ----- users, roles, permits -----

    def users(self) -> list[dict]:
        """Every user: the admin first (its password is the engine's), then those added."""
        admin = {
            "id": self.store.meta.get("admin_id") or new_id(),
            "login": "admin@internal",
            "user_name": "admin@internal-authz",
            "principal": "admin",
            "password": self.password,
            "role_ids": [SUPER_USER_ROLE],
        }
        return [admin, *self.store.meta.get("users", {}).values()]

    def roles(self) -> list[dict]:
        superuser = {"id": SUPER_USER_ROLE, "name": "SuperUser", "administrative": True, "permits": sorted(PERMITS)}
        return [superuser, *self.store.meta.get("roles", {}).values()]

    def _user_for_login(self, username: str) -> dict | None:
        name, _, domain = username.partition("@")
        if domain.lower() not in ("internal", "internal-authz"):
            return None
        return next((u for u in self.users() if u["principal"] == name), None)

    def user_by_login(self, login: str) -> dict:
        return next(u for u in self.users() if u["login"] == login)

    def add_user(self, name: str, password: str, permits: list[str]) -> dict:
        """A user of the internal domain with a role of its own holding these permits (and login)."""
        unknown = sorted(set(permits) - set(PERMITS))
        if unknown or not name or "@" in name:
            raise bad_request(f"A user needs a plain name and known permits (unknown: {', '.join(unknown) or '-'})")
        with self.store.lock:
            roles = self.store.meta.setdefault("roles", {})
            users = self.store.meta.setdefault("users", {})
            role = {
                "id": new_id(),
                "name": f"{name}-role",
                "administrative": True,
                "permits": sorted({*permits, "login"}),
            }
            roles[role["id"]] = role
            previous = users.get(name)
            if previous:
                for role_id in previous["role_ids"]:
                    roles.pop(role_id, None)
            user = {
                "id": previous["id"] if previous else new_id(),
                "login": f"{name}@internal",
                "user_name": f"{name}@internal-authz",
                "principal": name,
                "password": password,
                "role_ids": [role["id"]],
            }
            users[name] = user
            self.store.save()
        return user

    def user_permits(self, login: str) -> set[str]:
        user = self.user_by_login(login)
        return {p for r in self.roles() if r["id"] in user["role_ids"] for p in r["permits"]}

    def check_permit(self, login: str, permit: str, action: str) -> None:
        """403 as the engine answers a user whose roles lack the action's permit (its validation
        message USER_NOT_AUTHORIZED_TO_PERFORM_ACTION, with the action's "Cannot ..." words)."""
        if permit not in self.user_permits(login):
            raise EngineFault(403, f"[Cannot {action}. {NOT_AUTHORIZED}]")
