#!/usr/bin/env python3
"""Trickles one large request head into the gateway and reports the CPU the
gateway spent on it, and what it answered.

A head sent in small pieces costs a reader that parses its whole buffer again
after every read (Pingora's HTTP/1 reader does) CPU quadratic in its size;
the head guard (gateway/proxy/head_guard.rs) holds the pieces back and refuses
heads over maxRequestHeadersKb with a 431.

    bench/trickle.py --port 8080 --pid "$(pgrep -n claimgate)"
    bench/trickle.py --port 8080 --pid PID --size 65536 --piece 1 --complete

--size      bytes of the head at least, in whole `x-pad-N: aaa...` lines
            (default 1 MiB)
--line      bytes per header line (default 8192: Pingora refuses more than
            256 header lines with a 400 before any size limit)
--piece     bytes per send, TCP_NODELAY on (default 16); no sleeping between
            sends unless --pause-us says so
--complete  end the head with its empty line (by default it never ends)
--limit     seconds the whole run may take (default 60)

The gateway's CPU is utime + stime of --pid (all its threads) from
/proc/PID/stat, read before connecting and after the answer. Python 3 and
its standard library only; Linux only (/proc).
"""

import argparse
import os
import select
import socket
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User and system CPU seconds used so far by the process `pid`."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name, in parentheses, may hold spaces: split after it.
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15; fields[0] is field 3 (state).
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def head(size, line_length, complete):
    lines = [b"GET /trickle HTTP/1.1\r\n", b"host: trickle.example\r\n"]
    length = sum(map(len, lines))
    n = 0
    while length < size:
        name = b"x-pad-%d: " % n
        line = name + b"a" * max(line_length - len(name) - 2, 1) + b"\r\n"
        lines.append(line)
        length += len(line)
        n += 1
    if complete:
        lines.append(b"\r\n")
    return b"".join(lines)


def answered(sock):
    """What the gateway sent, if anything is there to read now: its first
    line, "connection closed", or None."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return None
    try:
        data = sock.recv(4096)
    except OSError as error:
        return f"connection closed ({error.strerror})"
    if not data:
        return "connection closed"
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def trickle(args):
    payload = head(args.size, args.line, args.complete)
    deadline = time.monotonic() + args.limit
    sock = socket.create_connection((args.host, args.port), timeout=args.limit)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = 0
    answer = None
    started = time.monotonic()
    try:
        while sent < len(payload) and time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sent += sock.send(payload[sent : sent + args.piece])
            if args.pause_us:
                time.sleep(args.pause_us / 1e6)
            answer = answered(sock)
            if answer:
                break
    except OSError as error:
        answer = f"connection closed while sending ({error.strerror or error})"
    # The answer, if it has not come yet: wait for it, within the limit.
    while answer is None and time.monotonic() < deadline:
        select.select([sock], [], [], max(min(deadline - time.monotonic(), 1), 0))
        answer = answered(sock)
    sock.close()
    return sent, len(payload), time.monotonic() - started, answer or "no answer in time"


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, required=True, help="the gateway's process id")
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--piece", type=int, default=16)
    parser.add_argument("--line", type=int, default=8192)
    parser.add_argument("--pause-us", type=int, default=0)
    parser.add_argument("--complete", action="store_true")
    parser.add_argument("--limit", type=float, default=60.0)
    args = parser.parse_args()

    user, system = cpu_seconds(args.pid)
    sent, size, elapsed, answer = trickle(args)
    user_after, system_after = cpu_seconds(args.pid)
    user, system = user_after - user, system_after - system

    print(f"sent {sent} of {size} bytes, {args.piece} per send, in {elapsed:.2f} s")
    print(f"gateway CPU: {user + system:.2f} s (user {user:.2f}, system {system:.2f})")
    print(f"answer: {answer}")


if __name__ == "__main__":
    sys.exit(main())
