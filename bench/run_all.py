"""Every bench once, at a short size, then one table of their ratios (`make bench`).

    .venv/bin/python bench/run_all.py [--warm] [--only backup,cbt,...]

Each bench runs in its own process, its output shown as it comes; each records its ratios
(bench/checks.py) in a file this script reads at the end. A bench that stops on an impossible
figure, or fails otherwise, is named under the table and makes the exit status 1. `--warm` keeps
the page cache for the benches that would drop it (backup, cbt, restore): on a machine others
share, dropping it slows them too. bench/soak.py is not run: it takes hours (`make test` runs
20 backups of it), and bench/connections.py and bench/nodes.py need a PostgreSQL server (DATABASE_URL,
by default postgres://postgres@127.0.0.1:5432/postgres), on which each creates and drops a database.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# Short sizes: each bench says what it measures in a minute or two; their defaults are larger.
BENCHES = {
    "consolidate": ["--size-mib", "512", "--data-mib", "128", "--changed-mib", "32"],
    "retention": ["--points", "2000", "--vms", "20"],
    "scheduler": ["--vms", "1000", "--policies", "20"],
    "inventory_sync": ["--vms", "500"],
    "estate": ["--runs", "3"],  # the large seed itself, 5,000 VMs: about 30 s on SQLite
    "connections": ["--clients", "20", "--seconds", "5"],
    "nodes": ["--vms", "20"],  # two worker nodes; 200 backups (its default) take about 45 s more
    "ssh_paths": ["--size-gib", "2", "--data-mib", "256"],
    "backup": [],  # the demo's 8 GiB disk holding 1 GiB: its size is the seed's
    "cbt": [],
    "restore": ["--runs", "1"],
    "ssh_transfer": ["--rounds", "1", "--layout", "shared"],
    "disk_attachment": [],  # the same 8 GiB disk, read on a proxy VM
    "export_domain": [],  # the same 8 GiB disk, exported and read from the staging share
    "files": [],  # its goals' sizes, a folder of 100,000 files and a 1 GiB file: about 2.5 min
    "instant": ["--data-gib", "1,2"],  # instant restore against a full restore; its default is 1 and 8 GiB
}
DROPS_CACHES = {"backup", "cbt", "restore", "disk_attachment", "export_domain", "files", "instant"}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warm", action="store_true", help="keep the page cache (backup, cbt, restore)")
    parser.add_argument("--only", default="", help="comma-separated benches, of: " + ", ".join(BENCHES))
    args = parser.parse_args()
    chosen = [b for b in args.only.split(",") if b] or list(BENCHES)
    unknown = [b for b in chosen if b not in BENCHES]
    if unknown:
        parser.error(f"no bench named {', '.join(unknown)}; the benches are {', '.join(BENCHES)}")
    with tempfile.NamedTemporaryFile("r", prefix="bench-ratios-", suffix=".jsonl") as table:
        failed = {}
        for name in chosen:
            argv = [sys.executable, str(BENCH / f"{name}.py"), *BENCHES[name]]
            if args.warm and name in DROPS_CACHES:
                argv.append("--warm")
            print(f"\n=== {name}: {' '.join(argv[1:])}", flush=True)
            started = time.monotonic()
            bench = subprocess.Popen(
                argv, env=os.environ | {"BENCH_RATIOS": table.name}, stderr=subprocess.PIPE, text=True
            )
            last = ""  # a bench's error is its last line on stderr (SystemExit's message, a traceback's end)
            for line in bench.stderr:
                sys.stderr.write(line)
                last = line.strip() or last
            bench.wait()
            print(f"=== {name}: {time.monotonic() - started:.0f}s, exit status {bench.returncode}", flush=True)
            if bench.returncode:
                failed[name] = last or f"exit status {bench.returncode}"
        rows = [json.loads(line) for line in table.read().splitlines()]
    print_table(rows)
    for name, error in failed.items():
        print(f"FAILED {name}: {error}")
    return 1 if failed else 0


def print_table(rows: list[dict]) -> None:
    width = max((len(r["label"]) for r in rows), default=10)
    print(f"\n{'bench':15s} {'figure':{width}s} {'value':>12s}  goal")
    for row in rows:
        value = f"{row['value']:.2f}{row['unit']}"
        print(f"{row['bench']:15s} {row['label']:{width}s} {value:>12s}  {row['goal']}")


if __name__ == "__main__":
    sys.exit(main())
