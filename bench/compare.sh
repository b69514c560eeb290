#!/usr/bin/env bash
# Two claimgate binaries side by side, in one run: scenarios A (no token,
# pass-through) and B (one valid RS256 token, claim-routed) of run.sh,
# each binary in turn, ROUNDS times, with the gateway pinned to one core
# and wrk plus the origin to the other. Prints each round and the median
# requests/s and gateway CPU microseconds per request (user + system, from
# /proc: what the gateway itself costs, whichever side is the bottleneck)
# per binary, and new/base.
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

source bench/common.sh

"$MINT" jwks "$WORK/jwks.json"
"$MINT" RS256 1 "$WORK/token"
ORIGIN_PORT=$(free_port); GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
taskset -c "$LOAD_CPU" "$NEW" origin --listen "127.0.0.1:$ORIGIN_PORT" --jwks "$WORK/jwks.json" --threads 1 2>/dev/null &
PIDS+=($!)
wait_http "http://127.0.0.1:$ORIGIN_PORT/jwks.json"

mkdir -p "$WORK/conf"
sed -e "s/GW_PORT/$GW_PORT/; s/ORIGIN_PORT/$ORIGIN_PORT/g; s/ADMIN_PORT/$ADMIN_PORT/" \
  bench/compare.yaml >"$WORK/conf/bench.yaml"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
measure() { # pid path tokens -> "requests/s cpu_us_per_request"
  local before out requests rate after
  before=$(cpu_ticks "$1")
  out=$(BENCH_PATH="$2" BENCH_TOKENS="$3" taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" \
    -s bench/wrk.lua "http://127.0.0.1:$GW_PORT")
  after=$(cpu_ticks "$1")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rate=$(awk '/^Requests\/sec/ {print int($2)}' <<<"$out")
  echo "$rate $(awk -v t=$((after - before)) -v us="$TICK_US" -v n="$requests" 'BEGIN {printf "%.1f", t * us / n}')"
}

ROWS="$WORK/rows"
for round in $(seq 1 "$ROUNDS"); do
  for which in base new; do
    bin=$BASE; [[ $which == new ]] && bin=$NEW
    RUST_LOG=warn taskset -c "$GW_CPU" "$bin" run --config "$WORK/conf" 2>"$WORK/gw.log" &
    pid=$!
    wait_http "http://127.0.0.1:$ADMIN_PORT/ready"
    read -r a a_us < <(measure "$pid" /a/x "")
    read -r b b_us < <(measure "$pid" /b/x "$WORK/token")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "round $round $which A $a ${a_us}us B $b ${b_us}us" | tee -a "$ROWS"
  done
done
python3 - "$ROWS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for which in ("base", "new"):
    for s in ("A", "B"):
        at = lambda r: r.index(s)
        med[which, s] = statistics.median(int(r[at(r) + 1]) for r in rows if r[2] == which)
        med[which, s, "us"] = statistics.median(
            float(r[at(r) + 2].rstrip("us")) for r in rows if r[2] == which)
for s in ("A", "B"):
    b, n = med["base", s], med["new", s]
    bu, nu = med["base", s, "us"], med["new", s, "us"]
    print(f"{s}: base {b:.0f} req/s {bu:.1f} us CPU/req; new {n:.0f} req/s {nu:.1f} us CPU/req; "
          f"new/base: throughput {n / b:.3f}, CPU per request {nu / bu:.3f}")
PY
