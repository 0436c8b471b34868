"""PostgreSQL connections held by the web server under load, against the bound the settings promise.

    .venv/bin/python bench/connections.py [--clients 50] [--seconds 20] [--workers 2] [--threads 4]

Creates a temporary database (bench_conn_<pid>) on the server of DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/postgres), migrates it, starts gunicorn as scripts/run does
(fixed --workers and --threads) on a free loopback port, and has N clients with API tokens call
a mix of list endpoints for a while. Meanwhile it samples pg_stat_activity for that database.
Prints the peak connection count against workers x threads (each gunicorn thread keeps at most
one connection, CONN_MAX_AGE; no django-q2 cluster runs here, which would add one per worker
process and one for its monitor), the server's max_connections, errors, and requests/s. The
database is dropped at the end.
"""

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import checks
import psycopg

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ["/api/v1/vms/", "/api/v1/jobs/", "/api/v1/policies/", "/api/v1/backups/", "/api/v1/managers/"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_connections(admin_url: str, name: str, stop: threading.Event, peaks: list[int]) -> None:
    # Connected to the maintenance database, so the sampler is not among what it counts.
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while not stop.is_set():
            count = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()[0]
            peaks.append(count)
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    admin_url = os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    name = f"bench_conn_{os.getpid()}"
    bench_url = urlunparse(urlparse(admin_url)._replace(path=f"/{name}"))
    work = Path(tempfile.mkdtemp(prefix="bench-conn-"))
    env = os.environ | {
        "DATABASE_URL": bench_url,
        "DATA_DIR": str(work),
        "DJANGO_SETTINGS_MODULE": "backupsite.settings",
        "SECRET_KEY": os.urandom(32).hex(),
        "CREDENTIALS_KEY": __import__("base64").urlsafe_b64encode(os.urandom(32)).decode(),
    }
    python = sys.executable
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        max_connections = conn.execute("SHOW max_connections").fetchone()[0]
    server = None
    try:
        subprocess.run([python, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
        tokens = subprocess.run(
            [python, "-c", SEED, str(args.clients)], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        ).stdout.split()
        port = free_port()
        server = subprocess.Popen(
            [str(Path(python).with_name("gunicorn")), "backupsite.wsgi", "--bind", f"127.0.0.1:{port}"]
            + ["--workers", str(args.workers), "--threads", str(args.threads), "--log-level", "warning"],
            cwd=ROOT,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("gunicorn did not start") from None
                time.sleep(0.1)

        stop = threading.Event()
        samples: list[int] = []
        sampler = threading.Thread(target=sample_connections, args=(admin_url, name, stop, samples))
        sampler.start()
        done, errors = [0] * args.clients, {}
        lock = threading.Lock()
        end = time.monotonic() + args.seconds

        def client(n: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            headers = {"Authorization": f"Token {tokens[n % len(tokens)]}"}
            i = n
            while time.monotonic() < end:
                path = ENDPOINTS[i % len(ENDPOINTS)]
                i += 1
                try:
                    conn.request("GET", path, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status} for {path}")
                    done[n] += 1
                except Exception as e:
                    with lock:
                        key = f"{type(e).__name__}: {e}"
                        errors[key] = errors.get(key, 0) + 1
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.close()

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # connections kept after the load are what CONN_MAX_AGE holds
        stop.set()
        sampler.join()

        bound = args.workers * args.threads
        peak = max(samples, default=0)
        checks.positive("the samples of pg_stat_activity taken", len(samples))
        checks.positive("the requests answered", sum(done))
        checks.positive("the seconds of load", elapsed)
        checks.positive("the peak of connections (the clients were answered, so some were open)", peak)
        checks.ratio("connections", "peak connections / workers x threads", peak, bound, goal="<= 1.0")
        print(
            f"gunicorn {args.workers} workers x {args.threads} threads, {args.clients} clients for {elapsed:.1f}s "
            f"on PostgreSQL (max_connections {max_connections})"
        )
        print(
            f"connections to {name}: peak {peak}, expected at most {bound} (workers x threads; "
            f"+ WORKERS + 1 when the django-q2 cluster runs) -> {'within' if peak <= bound else 'OVER'} the bound; "
            f"after the load {samples[-1] if samples else 0}"
        )
        print(f"requests: {sum(done)} ok, {sum(done) / elapsed:.0f}/s; errors: {sum(errors.values())}")
        for message, count in sorted(errors.items(), key=lambda e: -e[1])[:5]:
            print(f"  {count} x {message}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        subprocess.run(["rm", "-rf", str(work)], check=False)


# Run in a child with the bench database's settings: users with tokens, and some rows to list.
SEED = """
import sys, django
django.setup()
from django.contrib.auth import get_user_model
from core.tokens import issue_token
from core import roles
from inventory.models import VM, Manager

manager = Manager.objects.create(name="m", api_url="https://127.0.0.1:9/ovirt-engine/api", username="a@internal",
                                 verify_tls=False)
for n in range(200):
    VM.objects.create(manager=manager, engine_id=f"00000000-0000-0000-0000-{n:012d}", name=f"vm{n:03d}")
for n in range(min(int(sys.argv[1]), 10)):
    user = get_user_model().objects.create_user(f"bench{n}", password="bench-password-1")
    roles.set_role(user, roles.VIEWER)
    print(issue_token(user=user, name='bench')[1])
"""


if __name__ == "__main__":
    main()
