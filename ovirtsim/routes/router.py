"""The Router every route module registers on, and the Request a route function gets."""

import re
from typing import TYPE_CHECKING

from ovirtsim.errors import EngineFault
from ovirtsim.views import Views, parse_follow

if TYPE_CHECKING:
    from ovirtsim.server import Handler


class Router:
    """Routes as (method, path pattern with {params}, function); the first that matches answers."""

    def __init__(self):
        self.routes: list[tuple[str, re.Pattern, object]] = []

    def add(self, method: str, pattern: str):
        regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern) + "/?$")

        def register(fn):
            self.routes.append((method, regex, fn))
            return fn

        return register

    def match(self, method: str, path: str):
        allowed = False
        for m, regex, fn in self.routes:
            found = regex.match(path)
            if found:
                if m == method:
                    return fn, found.groupdict()
                allowed = True
        if allowed:
            raise EngineFault(405, f"Method {method} is not allowed on {path}", reason="Method Not Allowed")
        raise EngineFault(404, f"Resource {path} was not found", reason="Not Found")


router = Router()


class Request:
    """What a route function gets: the engine, the views, path parameters, query and body."""

    def __init__(
        self, handler: "Handler", engine, views: Views, params: dict, query: dict, body: bytes, *, user: str = ""
    ):
        self.handler = handler
        self.user = user or "admin@internal"  # the login name of the user making the request
        self.engine = engine
        self.views = views
        self.params = params
        self.query = query
        self.body = body

    def query_value(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, default)

    def flag(self, name: str) -> bool:
        value = self.query.get(name) or self.handler.headers.get(name.replace("_", "-").title())
        return (value or "").lower() == "true"

    @property
    def follow(self) -> dict:
        return parse_follow(self.query_value("follow"))
