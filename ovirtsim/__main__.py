"""python -m ovirtsim serve --state-dir DIR [--host 127.0.0.1] [--port N] [--ssh-port N]
                          [--seed demo|empty|large|two-dcs|scale:N[:C]]
python -m ovirtsim authorize-key --state-dir DIR 'ssh-ed25519 AAAA...'"""

import argparse
import logging
import signal
import sys
import threading

from ovirtsim.service import EngineService


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ovirtsim", description="A simulated oVirt engine with a real data plane.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the engine and its imageio daemon")
    serve.add_argument("--state-dir", required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 picks a free port")
    serve.add_argument(
        "--seed",
        default="demo",
        help="demo, empty, large (5,000 VMs, 12,000 thin disks), two-dcs (two data centers, each with an export "
        "domain and a small VM) or scale:N[:C] (N VMs over C clusters, one by default): large and scale disks hold "
        "no data",
    )
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument(
        "--ssh-port", type=int, default=None, help="the hosts' sshd port (22 as on real hosts); default: a free one"
    )
    authorize = sub.add_parser("authorize-key", help="let a public key log in as root on every host")
    authorize.add_argument("--state-dir", required=True)
    authorize.add_argument("public_key", help="'ssh-ed25519 AAAA... [comment]'")
    args = parser.parse_args(argv)

    if args.command == "authorize-key":
        from ovirtsim.hosts_ssh import authorize_key

        try:
            added = authorize_key(args.state_dir, args.public_key)
        except (ValueError, OSError) as e:
            print(f"ovirtsim: cannot authorize the key: {e}", file=sys.stderr)
            return 2
        print("authorized on every host" if added else "already authorized on every host")
        return 0

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = EngineService(args.state_dir, host=args.host, port=args.port, seed=args.seed, ssh_port=args.ssh_port)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        info = service.start()
    except Exception as e:
        print(f"ovirtsim: cannot start: {e}", file=sys.stderr)
        return 1
    print(f"ovirtsim engine: {info['api_url']} (user {info['username']}, details in {service.info_file})", flush=True)
    stopping.wait()
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
