"""`python3 slow_ssh.py RATE ssh ARGS...`: ssh, with what the client sends limited to RATE bytes a
second. sshfs runs it as its ssh_command, which makes a network share that takes writes slowly (a
busy NAS on a thin link): a copy into it lasts long enough for a test to act while it runs,
whatever tool writes it and however fast this machine is."""

import os
import select
import subprocess
import sys
import threading
import time

CHUNK = 64 * 1024


def main() -> int:
    rate = int(sys.argv[1])
    proc = subprocess.Popen(sys.argv[2:], stdin=subprocess.PIPE, stdout=sys.stdout.fileno(), bufsize=0)

    def read() -> bytes:
        # sshfs hands one socket over as stdin and stdout, and ssh makes its stdout non-blocking:
        # stdin is then non-blocking too.
        while True:
            select.select([0], [], [])
            try:
                return os.read(0, CHUNK)
            except BlockingIOError:
                continue

    def relay() -> None:
        due = time.monotonic()  # when the bytes sent so far may have left, at RATE; idle time is no credit
        try:
            while chunk := read():
                due = max(due, time.monotonic()) + len(chunk) / rate
                view = memoryview(chunk)
                while view:
                    view = view[os.write(proc.stdin.fileno(), view) :]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        except OSError:
            pass
        finally:
            proc.stdin.close()

    threading.Thread(target=relay, daemon=True).start()
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
