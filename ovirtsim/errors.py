class EngineFault(Exception):
    """An error the engine reports as a <fault> with an HTTP status."""

    def __init__(self, status: int, detail: str, reason: str = "Operation Failed"):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.reason = reason


def not_found(kind: str, ident: str) -> EngineFault:
    return EngineFault(404, f"Entity not found: {kind} {ident}", reason="Operation Failed")


def conflict(detail: str) -> EngineFault:
    return EngineFault(409, f"[{detail}]")


def bad_request(detail: str) -> EngineFault:
    return EngineFault(400, f"[{detail}]")
