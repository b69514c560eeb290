-- wrk script for bench/run.sh: one request path, an optional file of
-- tokens sent in rotation as `Authorization: Bearer` (one per line), and a
-- machine-readable RESULT line with p50/p99/p99.9.
--   BENCH_PATH    request path (default /)
--   BENCH_TOKENS  token file (default: no token)
--
-- Every request is built once, in init: sending one is then a table
-- lookup. Built per request, each never-seen token (scenario D) cost wrk a
-- fresh ~800-byte string and its garbage, on the cores the gateway needs.
local path = os.getenv("BENCH_PATH") or "/"
local file = os.getenv("BENCH_TOKENS")
local requests = {}
local i = 0

function init(args)
  if file ~= nil and file ~= "" then
    for line in io.lines(file) do
      requests[#requests + 1] =
        wrk.format("GET", path, { ["Authorization"] = "Bearer " .. line })
    end
  end
  if #requests == 0 then
    requests[1] = wrk.format("GET", path)
  end
end

function request()
  i = i + 1
  if i > #requests then
    i = 1
  end
  return requests[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d socket_errors=%d non2xx=%d p50_us=%d p99_us=%d p999_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
