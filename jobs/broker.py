"""Whether the task broker answers. With REDIS_URL the broker is a service of its own that may be
down while the database and the pages are up: the pages then say that jobs cannot be queued, an API
request that queued a job says so in its answer, and the job itself is kept (its row is the truth,
the task only carries its id): the reaper (jobs.tasks.requeue_lost_jobs) hands it to the broker again
once it answers. With the ORM broker the broker is the database: it answers whenever a page can.
"""

import logging
import time
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("jobs")

# A page asks at most this often per process: a broker that does not answer costs each page that
# asks the connect timeout below.
CHECK_EVERY_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 1.0

_last: dict[str, tuple[float, str]] = {}  # broker URL: (when asked, its error or "")


def broker_url() -> str:
    """The Redis broker's URL ("" with the ORM broker, or when tasks run in the process)."""
    from django_q.conf import Conf

    if Conf.SYNC or Conf.ORM or not isinstance(Conf.REDIS, str):
        return ""
    return Conf.REDIS


def url_for_people(url: str) -> str:
    """The URL without its password, nor its connection options (the query string)."""
    parts = urlsplit(url)._replace(query="")
    if parts.password:
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        user = f"{parts.username}:***@" if parts.username else ":***@"
        parts = parts._replace(netloc=user + host)
    return urlunsplit(parts)


def broker_down_message(url: str) -> str:
    return (
        f"Jobs cannot be queued: the task broker at {url_for_people(url)} does not answer. What you ask for "
        "is kept, and queued when it is back."
    )


def broker_error() -> str:
    """Why jobs cannot be queued now, for people; "" when the broker answers."""
    url = broker_url()
    if not url:
        return ""
    asked, error = _last.get(url, (0.0, ""))
    if time.monotonic() - asked < CHECK_EVERY_SECONDS:
        return error
    error = "" if _pings(url) else broker_down_message(url)
    _last[url] = (time.monotonic(), error)
    return error


def broker_available() -> bool:
    return not broker_error()


def _pings(url: str) -> bool:
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT_SECONDS, socket_timeout=CONNECT_TIMEOUT_SECONDS
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def is_broker_failure(error: BaseException) -> bool:
    """The error a task's hand-over to the broker raised is the broker not answering."""
    import redis

    return isinstance(error, redis.ConnectionError | redis.TimeoutError)


def note_dispatch_failed(job_id: int, error: BaseException) -> None:
    """What dispatch() does when the broker does not take a task: the job stays queued, with the
    time it was handed over, and the reaper hands it over again once the broker answers."""
    url = broker_url()
    if url:
        _last[url] = (time.monotonic(), broker_down_message(url))
    log.warning("job %s kept, not queued: the task broker does not answer (%s)", job_id, error)


def context_processor(request) -> dict:
    # The function itself, not its value: only a page that shows the banner (base.html) asks.
    return {"broker_error": broker_error}
