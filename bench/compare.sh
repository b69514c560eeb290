#!/usr/bin/env bash
# Two claimgate binaries side by side, in one run: scenarios A (no token,
# pass-through) and B (one valid RS256 token, claim-routed) of run.sh,
# each binary in turn, ROUNDS times, with the gateway pinned to one core
# and wrk plus the origin to the other. Prints each round and the median
# requests/s per binary, and new/base.
#
#   bench/compare.sh BASE_BINARY NEW_BINARY
#   ROUNDS=3 DURATION=5 CONNECTIONS=32 bench/compare.sh /tmp/claimgate-base target/release/claimgate
#
# Needs wrk, python3, curl, taskset; mints with bench-tokens (any profile).
# Everything listens on 127.0.0.1; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=$1
NEW=$2
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-32}
if [[ -z ${MINT:-} ]]; then
  for MINT in target/release/examples/bench-tokens target/debug/examples/bench-tokens; do
    [[ -x $MINT ]] && break
  done
fi
GW_CPU=${GW_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done
  echo "not ready: $1" >&2; return 1
}

"$MINT" jwks "$WORK/jwks.json"
"$MINT" RS256 1 "$WORK/token"
ORIGIN_PORT=$(free_port); GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
taskset -c "$LOAD_CPU" "$NEW" origin --listen "127.0.0.1:$ORIGIN_PORT" --jwks "$WORK/jwks.json" --threads 1 2>/dev/null &
PIDS+=($!)
wait_http "http://127.0.0.1:$ORIGIN_PORT/jwks.json"

mkdir -p "$WORK/conf"
cat >"$WORK/conf/bench.yaml" <<EOF
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bench, namespace: bench}
spec:
  servers:
  - port: {number: $GW_PORT, name: http, protocol: HTTP}
    bind: 127.0.0.1
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: origin, namespace: bench}
spec:
  hosts: [origin.bench.svc.cluster.local]
  ports: [{number: 80, name: http, targetPort: $ORIGIN_PORT}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: bench, namespace: bench}
spec:
  jwtRules:
  - issuer: https://bench.claimgate.test
    jwksUri: http://127.0.0.1:$ORIGIN_PORT/jwks.json
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bench, namespace: bench}
spec:
  hosts: ["*"]
  gateways: [bench]
  http:
  - name: passthrough
    match: [{uri: {prefix: /a/}}]
    route: [{destination: {host: origin, port: {number: 80}}}]
  - name: claims
    match:
    - uri: {prefix: /b/}
      headers:
        "@request.auth.claims.groups": {exact: group1}
    route: [{destination: {host: origin, port: {number: 80}}}]
---
apiVersion: claimgate/v1
kind: Settings
metadata: {name: bench}
spec:
  admin: 127.0.0.1:$ADMIN_PORT
  threads: 1
EOF

rps() { # path tokens -> requests/s
  BENCH_PATH="$1" BENCH_TOKENS="$2" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" \
    -s bench/wrk.lua "http://127.0.0.1:$GW_PORT" | awk '/^Requests\/sec/ {print int($2)}'
}

ROWS="$WORK/rows"
for round in $(seq 1 "$ROUNDS"); do
  for which in base new; do
    bin=$BASE; [[ $which == new ]] && bin=$NEW
    RUST_LOG=warn taskset -c "$GW_CPU" "$bin" run --config "$WORK/conf" 2>"$WORK/gw.log" &
    pid=$!
    wait_http "http://127.0.0.1:$ADMIN_PORT/ready"
    a=$(rps /a/x "")
    b=$(rps /b/x "$WORK/token")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "round $round $which A $a B $b" | tee -a "$ROWS"
  done
done
python3 - "$ROWS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for which in ("base", "new"):
    for s in ("A", "B"):
        vals = [int(r[r.index(s) + 1]) for r in rows if r[2] == which]
        med[which, s] = statistics.median(vals)
for s in ("A", "B"):
    print(f"{s}: base {med['base', s]:.0f} req/s, new {med['new', s]:.0f} req/s, new/base {med['new', s] / med['base', s]:.3f}")
PY
