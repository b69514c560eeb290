#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: repeatable
# whatever else the machine is doing (the same binary and requests give
# the same count), unlike a throughput figure on a shared box. Counts the
# gateway's user-space instructions (all threads) over N keep-alive
# requests of scenario A (no token) and B (one valid RS256 token, claim
# routed), after a warm-up; kernel time is not counted.
#
#   bench/instructions.sh BINARY [N]      # prints "A <instr/req> B <instr/req>"
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$1
N=${2:-2000}
MINT=${MINT:-target/debug/examples/bench-tokens}
source bench/common.sh
"$MINT" jwks "$WORK/jwks.json"
"$MINT" RS256 1 "$WORK/token"
ORIGIN_PORT=$(free_port); GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
"$BIN" origin --listen "127.0.0.1:$ORIGIN_PORT" --jwks "$WORK/jwks.json" --threads 1 2>/dev/null &
PIDS+=($!)
mkdir -p "$WORK/conf"
sed -e "s/GW_PORT/$GW_PORT/; s/ORIGIN_PORT/$ORIGIN_PORT/g; s/ADMIN_PORT/$ADMIN_PORT/" \
  bench/compare.yaml >"$WORK/conf/bench.yaml"
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" --instr-atstart=no \
  "$BIN" run --config "$WORK/conf" 2>"$WORK/vg.log" &
VG=$!
PIDS+=("$VG")
python3 - "$GW_PORT" "$ADMIN_PORT" "$N" "$WORK" "$(cat "$WORK/token")" <<'PY'
import glob, os, socket, subprocess, sys, time
gw, admin, n, work, token = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
def ready():
    try:
        s = socket.create_connection(("127.0.0.1", admin), timeout=1)
        s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return s.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False
deadline = time.time() + 120
while not ready():
    assert time.time() < deadline, "gateway not ready"
    time.sleep(0.5)
def run(path, extra, count):
    s = socket.create_connection(("127.0.0.1", gw))
    req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n{extra}\r\n".encode()
    f = s.makefile("rb")
    for _ in range(count):
        s.sendall(req)
        length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        f.read(length)
    s.close()
def path_label(extra):
    return "B" if extra else "A"
def count(path, extra):
    run(path, extra, 50)  # warm-up (and the token into the cache)
    subprocess.run(["callgrind_control", "-i", "on"], capture_output=True)
    subprocess.run(["callgrind_control", "-z"], capture_output=True)
    run(path, extra, n)
    subprocess.run(["callgrind_control", "-d"], capture_output=True)
    subprocess.run(["callgrind_control", "-i", "off"], capture_output=True)
    files = sorted(glob.glob(work + "/cg.*.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
    total = 0
    for line in open(files[-1]):
        if line.startswith("summary:") or line.startswith("totals:"):
            total = int(line.split()[1])
    for path in files:
        keep = os.environ.get("KEEP")
        if keep:
            os.replace(path, f"{keep}/{path.rsplit('/', 1)[1]}-{path_label(extra)}")
        else:
            os.remove(path)
    return total / n
a = count("/a/x", "")
b = count("/b/x", f"Authorization: Bearer {token}\r\n")
print(f"A {a:.0f} B {b:.0f}")
PY
