"""Whether the holder of a row another process wrote (a claim, an announced removal) still lives.

Such rows name the node and process that wrote them. Another node's process cannot be asked from
here, so it is taken for alive (its row lasts until it expires); one of this node's is asked."""

import os

from django.conf import settings


def holder_alive(*, node: str, pid: int | None) -> bool:
    if node != settings.NODE_NAME or not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, someone else's
    return True
