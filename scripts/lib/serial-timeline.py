#!/usr/bin/env python3
"""Stamp a growing serial-console log with the seconds since QEMU started.

    serial-timeline.py LOG START_EPOCH NEEDLE [TIMEOUT_S] > timeline

Follows LOG (QEMU's `-serial file:LOG`) until a line contains NEEDLE or
TIMEOUT_S (default 600) passes, printing each console line as
"<seconds> <line>". Exits 0 when NEEDLE was seen, 1 on timeout, 2 when the
log stopped growing because the PID in $QEMU_PID (if set) exited.
"""
import os
import re
import sys
import time

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def main() -> int:
    log, start, needle = sys.argv[1], float(sys.argv[2]), sys.argv[3].encode()
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 600.0
    pid = int(os.environ["QEMU_PID"]) if os.environ.get("QEMU_PID") else None
    offset, pending = 0, b""
    while True:
        now = time.time()
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        pending += chunk
        *lines, pending = re.split(rb"\r?\n|\r", pending)
        for raw in lines:
            line = ANSI.sub(b"", raw).strip()
            if not line:
                continue
            print(f"{now - start:7.1f} {line.decode('utf-8', 'replace')}", flush=True)
            if needle in line:
                return 0
        # A prompt ("login: ") ends without a newline.
        if needle in ANSI.sub(b"", pending):
            line = ANSI.sub(b"", pending).strip()
            print(f"{now - start:7.1f} {line.decode('utf-8', 'replace')}", flush=True)
            return 0
        if now - start > timeout:
            return 1
        if pid is not None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return 2
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
