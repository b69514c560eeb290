#!/usr/bin/env bash
# The load benchmark: builds in release, starts our origin and claimgate on
# a bench config, drives each scenario with wrk,
# runs HAProxy doing the same JWT job when it is installed, and writes the
# load section of bench/RESULTS.md (between its `load:begin`/`load:end`
# markers). Installs nothing: it says what is missing.
#
#   bench/run.sh                      # full run
#   DURATION=5 SOAK=0 bench/run.sh    # shorter: 5 s per scenario, no RSS soak
#
# Everything listens on 127.0.0.1; every run is bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}          # seconds per scenario
WARMUP=${WARMUP:-2}               # seconds of warm-up before cached scenarios
CONNECTIONS=${CONNECTIONS:-32}
SOAK=${SOAK:-120}                 # seconds of the RSS soak (0: skip)
OUT=${OUT:-bench/RESULTS.md}

missing=()
command -v wrk >/dev/null || missing+=("wrk (apt-get install wrk)")
command -v openssl >/dev/null || missing+=("openssl (apt-get install openssl)")
command -v python3 >/dev/null || missing+=("python3")
command -v curl >/dev/null || missing+=("curl (apt-get install curl)")
if ((${#missing[@]})); then
  printf 'missing: %s\n' "${missing[@]}" >&2
  exit 1
fi
HAVE_HAPROXY=0
if command -v haproxy >/dev/null; then HAVE_HAPROXY=1; else echo "note: haproxy not installed (apt-get install haproxy): no peer column" >&2; fi
OHA=${OHA:-oha}                    # a path to use an oha not on PATH
HAVE_OHA=0
if command -v "$OHA" >/dev/null; then HAVE_OHA=1; else echo "note: oha not installed (cargo install oha): no oha cross-check" >&2; fi

echo "building (release)..." >&2
cargo build --release --bins --example bench-tokens --example cache-memory >&2
BIN=target/release/claimgate
MINT=target/release/examples/bench-tokens

source bench/common.sh
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }


# ---------------------------------------------------------------- tokens
CACHE=bench/.tokens
mkdir -p "$CACHE"
"$MINT" jwks "$WORK/jwks.json"
mint() { # alg count name [invalid]
  local file="$CACHE/$3"
  if [[ ! -s "$file" || $(wc -l <"$file") -lt $2 ]]; then
    echo "minting $2 $1 tokens ($3)..." >&2
    "$MINT" "$1" "$2" "$file" ${4:-}
  fi
  echo "$file"
}
D_TOKENS=${D_TOKENS:-120000}       # enough distinct tokens for DURATION of scenario D
for alg in RS256 ES256; do
  mint "$alg" 10000 "$alg-10k" >/dev/null
  mint "$alg" 10000 "$alg-invalid" invalid >/dev/null
  mint "$alg" "$D_TOKENS" "$alg-fresh" >/dev/null
  head -n1 "$CACHE/$alg-10k" >"$WORK/$alg-one"
done
mint ES256 100000 "ES256-100k" >/dev/null

# ------------------------------------------------------- origin, gateway
ORIGIN_PORT=$(free_port); GW_PORT=$(free_port); ADMIN_PORT=$(free_port)
"$BIN" origin --listen "127.0.0.1:$ORIGIN_PORT" --jwks "$WORK/jwks.json" --threads 1 2>"$WORK/origin.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$ORIGIN_PORT/jwks.json"

write_config() { # dir cache_size
  mkdir -p "$1"
  cat >"$1/bench.yaml" <<EOF
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
  jwtCacheSize: $2
EOF
}

start_gateway() { # cache_size
  write_config "$WORK/conf-$1" "$1"
  RUST_LOG=warn "$BIN" run --config "$WORK/conf-$1" 2>"$WORK/gateway-$1.log" &
  GW_PID=$!
  PIDS+=("$GW_PID")
  wait_http "http://127.0.0.1:$ADMIN_PORT/ready"
}

# ------------------------------------------------------------ scenarios
RESULTS="$WORK/results.tsv"
run_wrk() { # label url path tokens seconds -> appends a row
  local label=$1 url=$2 path=$3 tokens=$4 seconds=$5
  local out
  out=$(BENCH_PATH="$path" BENCH_TOKENS="$tokens" wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --latency \
        -s bench/wrk.lua "$url" | grep '^RESULT')
  echo -e "$label\t$out" >>"$RESULTS"
  echo "$label $out" >&2
}
# oha cannot rotate tokens, so it cross-checks the scenarios with one fixed
# request (A, B, E: an invalid token is never cached, F), with the same
# connections, duration and one worker thread; same RESULT format as wrk.lua.
OHA_RESULTS="$WORK/oha.tsv"
run_oha() { # label url token seconds -> appends a row
  local label=$1 url=$2 token=$3 seconds=$4
  local header=()
  [[ -n "$token" ]] && header=(-H "Authorization: Bearer $token")
  local out
  out=$("$OHA" -z "${seconds}s" -c "$CONNECTIONS" --worker-threads 1 --no-tui --output-format json \
        "${header[@]}" "$url" | python3 -c '
import json, sys
d = json.load(sys.stdin)
codes = {int(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
errors = sum(v for k, v in (d.get("errorDistribution") or {}).items() if "deadline" not in k)
p = d["latencyPercentiles"]
us = lambda s: int((s or 0) * 1e6)
print("RESULT requests=%d duration_us=%d socket_errors=%d non2xx=%d p50_us=%d p99_us=%d p999_us=%d" % (
    sum(codes.values()), us(d["summary"]["total"]), errors,
    sum(v for k, v in codes.items() if not 200 <= k < 300),
    us(p["p50"]), us(p["p99"]), us(p["p99.9"])))')
  echo -e "$label\t$out" >>"$OHA_RESULTS"
  echo "oha $label $out" >&2
}
warm() { # url path tokens
  BENCH_PATH="$2" BENCH_TOKENS="$3" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" -s bench/wrk.lua "$1" >/dev/null
}

start_gateway 10000
GW="http://127.0.0.1:$GW_PORT"
for alg in RS256 ES256; do
  run_wrk "claimgate $alg A" "$GW" /a/x "" "$DURATION"
  warm "$GW" /b/x "$WORK/$alg-one"
  run_wrk "claimgate $alg B" "$GW" /b/x "$WORK/$alg-one" "$DURATION"
  WARMUP=$((WARMUP * 3)) warm "$GW" /b/x "$CACHE/$alg-10k"   # long enough to send all 10,000 once
  run_wrk "claimgate $alg C" "$GW" /b/x "$CACHE/$alg-10k" "$DURATION"
  run_wrk "claimgate $alg D" "$GW" /b/x "$CACHE/$alg-fresh" "$DURATION"
  run_wrk "claimgate $alg E" "$GW" /b/x "$CACHE/$alg-invalid" "$DURATION"
  run_wrk "claimgate $alg F" "$GW" /f/x "" "$DURATION"
done
if ((HAVE_OHA)); then
  for alg in RS256 ES256; do
    run_oha "claimgate $alg A" "$GW/a/x" "" "$DURATION"
    run_oha "claimgate $alg B" "$GW/b/x" "$(cat "$WORK/$alg-one")" "$DURATION"
    run_oha "claimgate $alg E" "$GW/b/x" "$(head -n1 "$CACHE/$alg-invalid")" "$DURATION"
    run_oha "claimgate $alg F" "$GW/f/x" "" "$DURATION"
  done
fi
GW_HWM=$(hwm_kib "$GW_PID")
kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true

# -------------------------------------------- memory: 100,000 cached tokens
start_gateway 100000
# Long enough to send all 100,000 tokens at least once (ES256 misses run at ~4,000/s here).
BENCH_PATH=/b/x BENCH_TOKENS="$CACHE/ES256-100k" wrk -t1 -c"$CONNECTIONS" -d"${MEM_FILL:-40}s" -s bench/wrk.lua "$GW" >/dev/null
CACHED=$(curl -fs "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^claimgate_jwt_cache_entries / {print $2}')
RSS_100K=$(rss_kib "$GW_PID")
SOAK_ROWS=""
if ((SOAK > 0)); then
  for ((t = 0; t < SOAK; t += 20)); do
    BENCH_PATH=/b/x BENCH_TOKENS="$CACHE/ES256-100k" wrk -t1 -c"$CONNECTIONS" -d20s -s bench/wrk.lua "$GW" >/dev/null
    SOAK_ROWS+="| $((t + 20)) s | $(( $(rss_kib "$GW_PID") / 1024 )) MiB |"$'\n'
  done
fi
kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true

# The cache alone: resident bytes per cached token, no gateway around it.
CACHE_MEMORY=$(target/release/examples/cache-memory "$WORK/jwks.json" "$CACHE/ES256-100k")
echo "$CACHE_MEMORY" >&2

# ---------------------------------------------------------- HAProxy peer
if ((HAVE_HAPROXY)); then
  HA_PORT=$(free_port)
  openssl pkey -inform DER -in tests/fixtures/keys/rsa-2048.pk8 -pubout -out "$WORK/rsa.pem" 2>/dev/null
  openssl pkey -inform DER -in tests/fixtures/keys/ec-p256.pk8 -pubout -out "$WORK/ec.pem" 2>/dev/null
  cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend gateway
  bind 127.0.0.1:$HA_PORT
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg') if { var(txn.bearer) -m found }
  http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('\$.iss') if { var(txn.bearer) -m found }
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int') if { var(txn.bearer) -m found }
  http-request set-var(txn.now) date()
  http-request set-var(txn.ttl) var(txn.exp),sub(txn.now) if { var(txn.bearer) -m found }
  http-request return status 401 if { var(txn.bearer) -m found } !{ var(txn.iss) -m str https://bench.claimgate.test }
  http-request return status 401 if { var(txn.bearer) -m found } { var(txn.ttl) -m int lt 0 }
  http-request return status 401 if { var(txn.alg) -m str RS256 } !{ var(txn.bearer),jwt_verify(txn.alg,"$WORK/rsa.pem") -m int 1 }
  http-request return status 401 if { var(txn.alg) -m str ES256 } !{ var(txn.bearer),jwt_verify(txn.alg,"$WORK/ec.pem") -m int 1 }
  http-request return status 401 if { var(txn.bearer) -m found } !{ var(txn.alg) -m str RS256 ES256 }
  http-request set-var(txn.group0) var(txn.bearer),jwt_payload_query('\$.groups[0]') if { var(txn.bearer) -m found }
  acl open path_beg /a/
  acl claims path_beg /b/
  acl group1 var(txn.group0) -m str group1
  http-request return status 404 unless open or claims group1
  default_backend origin
backend origin
  http-reuse always
  server origin 127.0.0.1:$ORIGIN_PORT
EOF
  if haproxy -c -f "$WORK/haproxy.cfg" >"$WORK/haproxy-check.log" 2>&1; then
    haproxy -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
    HA_PID=$!; PIDS+=("$HA_PID")
    HA="http://127.0.0.1:$HA_PORT"
    wait_http "$HA/a/ready"
    for alg in RS256 ES256; do
      run_wrk "haproxy $alg A" "$HA" /a/x "" "$DURATION"
      run_wrk "haproxy $alg B" "$HA" /b/x "$WORK/$alg-one" "$DURATION"
      run_wrk "haproxy $alg D" "$HA" /b/x "$CACHE/$alg-fresh" "$DURATION"
      run_wrk "haproxy $alg E" "$HA" /b/x "$CACHE/$alg-invalid" "$DURATION"
    done
    kill "$HA_PID"; wait "$HA_PID" 2>/dev/null || true
  else
    echo "haproxy rejected the peer config:" >&2; cat "$WORK/haproxy-check.log" >&2
    HAVE_HAPROXY=0
  fi
fi

# --------------------------------------------------------------- report
python3 bench/report.py "$RESULTS" "$OUT" \
  --duration "$DURATION" --connections "$CONNECTIONS" \
  --gateway-hwm-kib "$GW_HWM" --rss-100k-kib "$RSS_100K" --cached "${CACHED:-unknown}" \
  --soak "$SOAK_ROWS" --haproxy "$HAVE_HAPROXY" --cache-memory "$CACHE_MEMORY" \
  --oha-results "$( ((HAVE_OHA)) && echo "$OHA_RESULTS" || true)" \
  --versions "$("$BIN" --version); $(wrk --version 2>&1 | head -1); $( ((HAVE_HAPROXY)) && haproxy -v | head -1 || echo 'no haproxy'); $( ((HAVE_OHA)) && "$OHA" --version || echo 'no oha')"
echo "wrote $OUT" >&2
