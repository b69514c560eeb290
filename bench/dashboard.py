#!/usr/bin/env python3
"""The claimgate dashboard, rendered from a real run without Grafana.

Three subcommands (stdlib + matplotlib only):

  scrape    GET a running gateway's admin /metrics every INTERVAL seconds for
            SECONDS seconds and append one JSON line per scrape to OUT:
            {"t": unix_seconds, "samples": [[name, {label: value}, value], ...]}
            (or {"t": ..., "error": "..."} when a scrape fails).
  render    Draw docs/dashboard.png from such a file: the panels of
            conf/observability/grafana-dashboard.json, each computed from the
            scraped samples as its PromQL would be, evaluated at every scrape:
            rate() over a WINDOW with Prometheus' extrapolation, sum by,
            histogram_quantile() with linear interpolation inside a bucket.
  mix-lua   Print a wrk script sending the demo's four kinds of requests (and
            optionally a fifth: a token whose kid is not in the key set) in a
            fixed rotation; weights and pacing come from the environment.

Usage (conf/observability/README.md has the exact commands of the run
behind docs/dashboard.png):

  cp target/debug/claimgate /tmp/claimgate-dash
  /tmp/claimgate-dash demo --port 18180 --admin 127.0.0.1:18181 &
  python3 bench/dashboard.py mix-lua > /tmp/mix.lua
  python3 bench/dashboard.py scrape --url http://127.0.0.1:18181/metrics \\
      --seconds 215 --out /tmp/dashboard-run.jsonl &
  MIX=7,1,1,1,0 PACE_MS=20 wrk -t1 -c8 -d60s -s /tmp/mix.lua http://127.0.0.1:18180/headers
  ...                                   # more phases, then stop the demo
  python3 bench/dashboard.py render --in /tmp/dashboard-run.jsonl   # -> docs/dashboard.png

render's --window (default 20 s) stands for Grafana's $__rate_interval;
keep it at several scrape intervals.
"""

import argparse
import base64
import json
import math
import os
import re
import sys
import time
import urllib.request
from collections import defaultdict

# ---------------------------------------------------------------------------
# Prometheus text exposition (the subset claimgate writes: no timestamps,
# no exemplars) and the scraper.

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(value):
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_exposition(text):
    """[(name, {label: value}, float)] for every sample line."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"not a sample line: {line!r}")
        name, labels_text, value = m.group(1), m.group(2), m.group(3)
        labels = {}
        if labels_text:
            body, pos = labels_text[1:-1], 0
            while pos < len(body):
                lm = _LABEL.match(body, pos)
                if not lm:
                    raise ValueError(f"bad labels: {labels_text!r}")
                labels[lm.group(1)] = _unescape(lm.group(2))
                pos = lm.end()
        samples.append((name, labels, float(value)))  # float() reads +Inf, NaN
    return samples


def scrape(url, out, seconds, interval):
    start = time.time()
    n = 0
    with open(out, "a", encoding="utf-8") as f:
        while True:
            t = time.time()
            try:
                with urllib.request.urlopen(url, timeout=interval) as r:
                    text = r.read().decode("utf-8")
                record = {"t": t, "samples": parse_exposition(text)}
            except Exception as e:  # a failed scrape is a gap, as in Prometheus
                record = {"t": t, "error": str(e)}
            f.write(json.dumps(record) + "\n")
            f.flush()
            n += 1
            next_at = start + n * interval
            if next_at > start + seconds:
                break
            time.sleep(max(0.0, next_at - time.time()))
    print(f"{n} scrapes written to {out}", file=sys.stderr)


# ---------------------------------------------------------------------------
# PromQL, evaluated over the scraped samples at each scrape time.


class Store:
    """Every series of the run: (name, labels) -> [(t, value)] in time order."""

    def __init__(self, path):
        self.series = defaultdict(list)
        self.times = []
        self.errors = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                record = json.loads(line)
                if "error" in record:
                    self.errors += 1
                    continue
                t = record["t"]
                self.times.append(t)
                for name, labels, value in record["samples"]:
                    key = (name, tuple(sorted(labels.items())))
                    self.series[key].append((t, value))

    def select(self, name, **match):
        """[(labels, points)] of the series of one metric whose labels match
        the given regexes (fully anchored, as PromQL's =~)."""
        out = []
        for (n, labels), points in self.series.items():
            if n != name:
                continue
            d = dict(labels)
            if all(re.fullmatch(rx, d.get(k, "")) for k, rx in match.items()):
                out.append((d, points))
        return out


LOOKBACK = 300.0  # an instant selector sees samples up to 5 min old


def instant(points, t):
    """The value of an instant vector selector at t (None: no sample)."""
    value = None
    for ts, v in points:
        if ts > t:
            break
        if t - ts <= LOOKBACK:
            value = v
    return value


def rate(points, t, window):
    """Prometheus' rate(): samples in (t - window, t], counter resets
    corrected, extrapolated towards the window's edges as extrapolatedRate()
    in promql/functions.go does. None with fewer than two samples."""
    pts = [(ts, v) for ts, v in points if t - window < ts <= t]
    if len(pts) < 2:
        return None
    result = pts[-1][1] - pts[0][1]
    for (_, prev), (_, cur) in zip(pts, pts[1:]):
        if cur < prev:  # counter reset
            result += prev
    first_t, first_v = pts[0]
    last_t = pts[-1][0]
    to_start = first_t - (t - window)
    to_end = t - last_t
    sampled = last_t - first_t
    average = sampled / (len(pts) - 1)
    threshold = average * 1.1
    if to_start >= threshold:
        to_start = average / 2
    if result > 0 and first_v >= 0:  # a counter does not go below zero
        to_start = min(to_start, sampled * (first_v / result))
    if to_end >= threshold:
        to_end = average / 2
    return result * (sampled + to_start + to_end) / sampled / window


AGGREGATIONS = {"sum": sum, "min": min, "max": max}


def aggregate(op, selected, t, value_of, by):
    """`op by (by) (value_of(series))` at t: {((label, value), ...): value}.
    Series without a value at t (fewer than two samples in a rate window, no
    sample yet) drop out, as in PromQL."""
    groups = defaultdict(list)
    for labels, points in selected:
        v = value_of(points, t)
        if v is not None:
            groups[tuple((k, labels.get(k, "")) for k in by)].append(v)
    return {key: AGGREGATIONS[op](values) for key, values in groups.items()}


def histogram_quantile(q, buckets):
    """Prometheus' bucketQuantile(): buckets is [(le, cumulative count)]."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged = {}
    for le, c in buckets:  # same upper bound twice: add them up
        merged[le] = merged.get(le, 0.0) + c
    b = sorted(merged.items())
    if len(b) < 2 or not math.isinf(b[-1][0]):
        return math.nan
    running = 0.0
    for i, (le, c) in enumerate(b):  # force cumulative counts to be monotonic
        running = max(running, c)
        b[i] = (le, running)
    total = b[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    i = next((i for i in range(len(b) - 1) if b[i][1] >= rank), len(b) - 1)
    if i == len(b) - 1:
        return b[-2][0]  # in the +Inf bucket: the highest finite bound
    if i == 0 and b[0][0] <= 0:
        return b[0][0]
    start, end, count = 0.0, b[i][0], b[i][1]
    if i > 0:
        start = b[i - 1][0]
        count -= b[i - 1][1]
        rank -= b[i - 1][1]
    return start + (end - start) * (rank / count)


# ---------------------------------------------------------------------------
# The panels. Each has the queries of conf/observability/grafana-dashboard.json
# (expr and legend, from which that file was generated) and their evaluation
# here, with $route and $cluster at "All" and $__rate_interval the --window.


class Eval:
    """PromQL building blocks over a Store, evaluated at every scrape time.
    Each returns {labels: [(t, value)]}, labels a tuple of (name, value)."""

    def __init__(self, store, window):
        self.store, self.window = store, window

    def _over_time(self, at):
        out = defaultdict(list)
        for t in self.store.times:
            for labels, v in at(t).items():
                out[labels].append((t, v))
        return dict(out)

    def _rate(self, points, t):
        return rate(points, t, self.window)

    def _select(self, name, derive=None):
        selected = self.store.select(name)
        if derive:  # label_replace: add labels computed from the others
            selected = [({**labels, **{k: f(labels) for k, f in derive.items()}}, points)
                        for labels, points in selected]
        return selected

    def rates_at(self, op, name, by, t, derive=None):
        return aggregate(op, self._select(name, derive), t, self._rate, by)

    def rates(self, op, name, by, derive=None):
        """op by (by) (rate(name[window]))"""
        return self._over_time(lambda t: self.rates_at(op, name, by, t, derive))

    def values(self, op, name, by):
        """op by (by) (name)"""
        selected = self._select(name)
        return self._over_time(lambda t: aggregate(op, selected, t, instant, by))

    def quantile(self, q, name, by):
        """histogram_quantile(q, sum by (le, by) (rate(name_bucket[window])))"""
        def at(t):
            per = defaultdict(list)
            for key, v in self.rates_at("sum", name + "_bucket", ["le"] + by, t).items():
                per[key[1:]].append((float(key[0][1]), v))
            return {group: histogram_quantile(q, buckets) for group, buckets in per.items()}
        return self._over_time(at)

    def share_by_reason(self):
        """sum by (reason) (rate(rejections)) / ignoring(reason) group_left sum(rate(requests))"""
        def at(t):
            total = self.rates_at("sum", "claimgate_requests_total", [], t)
            rejected = self.rates_at("sum", "claimgate_rejections_total", ["reason"], t)
            if () not in total:
                return {}
            return {key: _div(v, total[()]) for key, v in rejected.items()}
        return self._over_time(at)

    def hit_ratio(self):
        """sum(rate(hits)) / (sum(rate(hits)) + sum(rate(misses)))"""
        def at(t):
            hits = self.rates_at("sum", "claimgate_jwt_cache_hits_total", [], t)
            misses = self.rates_at("sum", "claimgate_jwt_cache_misses_total", [], t)
            if () not in hits or () not in misses:
                return {}
            return {(): _div(hits[()], hits[()] + misses[()])}
        return self._over_time(at)


def _div(a, b):
    """PromQL division: x/0 is +Inf or -Inf, 0/0 is NaN."""
    if b == 0:
        return math.nan if a == 0 else math.copysign(math.inf, a)
    return a / b


def code_class(labels):  # label_replace(..., "code_class", "${1}xx", "code", "(.)..")
    return labels.get("code", "?")[:1] + "xx"


RATE = "[$__rate_interval]"
ROUTE_CLUSTER = '{route=~"$route", cluster=~"$cluster"}'

# (section, title, Grafana unit, stepped line, [(expr, legend, evaluation)])
PANELS = [
    ("Traffic", "Requests/s by response code class", "reqps", False, [
        ('sum by (code_class) (label_replace(rate(claimgate_requests_total' + ROUTE_CLUSTER + RATE
         + '), "code_class", "${1}xx", "code", "(.).."))', "{{code_class}}",
         lambda e: e.rates("sum", "claimgate_requests_total", ["code_class"],
                           derive={"code_class": code_class}))]),
    ("Traffic", "Requests/s by route", "reqps", False, [
        ("sum by (route) (rate(claimgate_requests_total" + ROUTE_CLUSTER + RATE + "))", "{{route}}",
         lambda e: e.rates("sum", "claimgate_requests_total", ["route"]))]),
    ("Traffic", "Answered by the gateway: share, by reason", "percentunit", False, [
        ("sum by (reason) (rate(claimgate_rejections_total" + RATE + "))\n"
         "  / ignoring(reason) group_left\n"
         "sum(rate(claimgate_requests_total" + RATE + "))", "{{reason}}",
         lambda e: e.share_by_reason())]),
    ("Traffic", "Requests active", "short", False, [
        ("sum(claimgate_downstream_requests_active)", "active",
         lambda e: e.values("sum", "claimgate_downstream_requests_active", []))]),
    ("Latency", "Request latency p50/p99 by route", "s", False, [
        (f"histogram_quantile({q}, sum by (le, route) (rate(claimgate_request_duration_seconds_bucket"
         '{route=~"$route"}' + RATE + ")))", f"p{round(q * 100)} {{{{route}}}}",
         lambda e, q=q: e.quantile(q, "claimgate_request_duration_seconds", ["route"]))
        for q in (0.5, 0.99)]),
    ("Latency", "Upstream response p99 by cluster", "s", False, [
        ("histogram_quantile(0.99, sum by (le, cluster) (rate(claimgate_upstream_response_seconds_bucket"
         '{cluster=~"$cluster"}' + RATE + ")))", "p99 {{cluster}}",
         lambda e: e.quantile(0.99, "claimgate_upstream_response_seconds", ["cluster"]))]),
    ("Upstream", "Endpoints healthy vs total", "short", True, [
        ('min by (cluster) (claimgate_upstream_endpoints_healthy{cluster=~"$cluster"})',
         "healthy {{cluster}}",
         lambda e: e.values("min", "claimgate_upstream_endpoints_healthy", ["cluster"])),
        ('max by (cluster) (claimgate_upstream_endpoints{cluster=~"$cluster"})', "total {{cluster}}",
         lambda e: e.values("max", "claimgate_upstream_endpoints", ["cluster"]))]),
    ("Authorization", "AuthorizationPolicy decisions/s", "ops", False, [
        ("sum by (policy, result) (rate(claimgate_authz_decisions_total" + RATE + "))",
         "{{policy}} {{result}}",
         lambda e: e.rates("sum", "claimgate_authz_decisions_total", ["policy", "result"]))]),
    ("JWT", "Validations/s by issuer, result", "ops", False, [
        ("sum by (issuer, result) (rate(claimgate_jwt_validations_total" + RATE + "))",
         "{{issuer}} {{result}}",
         lambda e: e.rates("sum", "claimgate_jwt_validations_total", ["issuer", "result"]))]),
    ("JWT", "Token cache hit ratio", "percentunit", False, [
        ("sum(rate(claimgate_jwt_cache_hits_total" + RATE + "))\n"
         "  / (sum(rate(claimgate_jwt_cache_hits_total" + RATE + "))"
         " + sum(rate(claimgate_jwt_cache_misses_total" + RATE + ")))", "hit ratio",
         lambda e: e.hit_ratio())]),
    ("JWT", "Token cache entries, evictions/s", "short", False, [
        ("sum(claimgate_jwt_cache_entries)", "entries",
         lambda e: e.values("sum", "claimgate_jwt_cache_entries", [])),
        ("sum(rate(claimgate_jwt_cache_evictions_total" + RATE + "))", "evictions/s",
         lambda e: e.rates("sum", "claimgate_jwt_cache_evictions_total", []))]),
    ("JWKS", "Usable keys per URI", "short", True, [
        ("min by (uri) (claimgate_jwks_keys)", "{{uri}}",
         lambda e: e.values("min", "claimgate_jwks_keys", ["uri"]))]),
    ("JWKS", "Seconds since last success", "s", False, [
        ("max by (uri) (claimgate_jwks_seconds_since_last_success)", "{{uri}}",
         lambda e: e.values("max", "claimgate_jwks_seconds_since_last_success", ["uri"]))]),
    ("JWKS", "Fetches by result (counter)", "short", True, [
        ("sum by (uri, result) (claimgate_jwks_fetches_total)", "{{result}} {{uri}}",
         lambda e: e.values("sum", "claimgate_jwks_fetches_total", ["uri", "result"]))]),
    ("Config", "Generation, pending restart", "short", True, [
        ("max(claimgate_config_generation)", "generation",
         lambda e: e.values("max", "claimgate_config_generation", [])),
        ("max(claimgate_config_pending_restart)", "pending restart",
         lambda e: e.values("max", "claimgate_config_pending_restart", []))]),
    ("Config", "Reloads by result (counter)", "short", True, [
        ("sum by (result) (claimgate_config_reloads_total)", "{{result}}",
         lambda e: e.values("sum", "claimgate_config_reloads_total", ["result"]))]),
]


def legend(fmt, labels):
    """Grafana's legend format: {{label}} replaced by the label's value."""
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: dict(labels).get(m.group(1), ""), fmt).strip()


def evaluate(store, window):
    """[(section, title, unit, stepped, {legend: [(t, value)]})]."""
    e = Eval(store, window)
    out = []
    for section, title, unit, stepped, queries in PANELS:
        series = {}
        for _expr, fmt, evaluation in queries:
            for labels, points in evaluation(e).items():
                series[legend(fmt, labels)] = points
        out.append((section, title, unit, stepped, series))
    return out


# ---------------------------------------------------------------------------
# Rendering: a dark, Grafana-like grid.

BG, PANEL, TEXT, DIM, GRID = "#111217", "#181b1f", "#ccccdc", "#8e8e9e", "#2c3235"
PALETTE = ["#73BF69", "#F2CC0C", "#5794F2", "#FF9830", "#F2495C", "#B877D9",
           "#8AB8FF", "#FADE2A", "#96D98D", "#FFB357", "#CA95E5", "#FF7383"]
UNITS = {"reqps": "requests/s", "percentunit": "share", "s": "seconds", "ops": "per second"}
# Why a panel can be empty (a family with no series is not exposed at all).
NO_DATA = {
    "AuthorizationPolicy decisions/s": "no series in this run\n(no AuthorizationPolicy decided a request)",
    "Reloads by result (counter)": "no series in this run\n(no reload has happened)",
}
CLASS_COLOURS = {"2xx": "#73BF69", "3xx": "#5794F2", "4xx": "#F2CC0C", "5xx": "#F2495C"}


def render(path, out, window, columns):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from datetime import datetime, timezone

    store = Store(path)
    if len(store.times) < 3:
        sys.exit(f"{path}: {len(store.times)} scrapes; need at least 3")
    grid = evaluate(store, window)
    rows = math.ceil(len(grid) / columns)
    plt.rcParams.update({"font.size": 7, "font.family": "DejaVu Sans"})
    fig, axes = plt.subplots(rows, columns, figsize=(16, 10), dpi=100, facecolor=BG)
    t0, t1 = store.times[0], store.times[-1]
    requests = store.select("claimgate_requests_total")
    # counted during the run: a series already there at the first scrape
    # started from its value then, a later one from zero
    total = sum(p[-1][1] - (p[0][1] if p[0][0] <= t0 else 0) for _, p in requests)
    fig.suptitle("claimgate — rendered by bench/dashboard.py from a real run", x=0.01, ha="left",
                 color=TEXT, fontsize=13, fontweight="bold", y=0.985)
    fig.text(0.01, 0.953,
             f"{datetime.fromtimestamp(t0, timezone.utc):%Y-%m-%d %H:%M:%S} UTC, "
             f"{t1 - t0:.0f} s, {len(store.times)} scrapes every "
             f"{(t1 - t0) / max(1, len(store.times) - 1):.0f} s ({store.errors} failed), "
             f"{total:,.0f} requests answered; rates over {window:g} s windows, "
             f"quantiles by histogram_quantile over those rates; queries as in "
             f"conf/observability/grafana-dashboard.json",
             color=DIM, fontsize=8, ha="left")
    to_dt = lambda t: datetime.fromtimestamp(t, timezone.utc)  # noqa: E731
    # about four time ticks per panel, on round seconds or minutes
    step = next((s for s in (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
                 if s >= (t1 - t0) / 4), 3600)
    ticks = (mdates.SecondLocator(bysecond=range(0, 60, step)) if step < 60 else
             mdates.MinuteLocator(byminute=range(0, 60, step // 60)) if step < 3600 else
             mdates.HourLocator())
    for ax, (section, title, unit, stepped, series) in zip(axes.flat, grid):
        ax.set_facecolor(PANEL)
        for side in ax.spines.values():
            side.set_color(GRID)
        ax.tick_params(colors=DIM, labelsize=6.5, length=2)
        ax.grid(True, color=GRID, linewidth=0.5)
        ax.set_title(f"{section} · {title}", color=TEXT, fontsize=8, loc="left", pad=3)
        ax.set_ylabel(UNITS.get(unit, ""), color=DIM, fontsize=6.5, labelpad=2)
        ax.set_xlim(to_dt(t0), to_dt(t1))
        ax.xaxis.set_major_locator(ticks)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        drawn = 0
        for i, (legend, points) in enumerate(sorted(series.items())):
            # NaN and Inf (0/0, a quantile of no requests) are gaps, as in Grafana.
            xs = [to_dt(t) for t, v in points]
            ys = [v if math.isfinite(v) else math.nan for t, v in points]
            if all(math.isnan(y) for y in ys):
                continue
            # dashed: a bound drawn over its twin (total over healthy, ...)
            dashed = legend.startswith("total ") or legend == "pending restart"
            ax.plot(xs, ys, color=CLASS_COLOURS.get(legend, PALETTE[i % len(PALETTE)]),
                    linewidth=1.1, label=legend, linestyle="--" if dashed else "-",
                    drawstyle="steps-post" if stepped else "default")
            drawn += 1
        if not drawn:
            ax.set_ylim(0, 1)
            ax.text(0.5, 0.5, "No data: " + NO_DATA.get(title, "no series in this run"),
                    transform=ax.transAxes, ha="center", va="center", color=DIM, fontsize=8,
                    wrap=True)
            continue
        top = ax.get_ylim()[1]
        if unit == "percentunit":
            ax.set_ylim(0, min(1.05, max(0.05, top * 1.25)))
            ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
        else:
            ax.set_ylim(0, max(1.0 if stepped else top, top) * 1.3)
            if unit == "s":
                ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_fmt_seconds))
        ax.legend(loc="best", fontsize=6, frameon=True, facecolor=PANEL,
                  edgecolor=GRID, labelcolor=TEXT, ncol=1, handlelength=1.2,
                  borderpad=0.3, labelspacing=0.2, framealpha=0.85)
    for ax in list(axes.flat)[len(grid):]:
        ax.set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.945), h_pad=1.0, w_pad=0.8)
    fig.savefig(out, facecolor=BG)
    print(f"wrote {out}", file=sys.stderr)


def _fmt_seconds(v, _pos=None):
    if v == 0:
        return "0"
    if v < 1e-3:
        return f"{v * 1e6:.0f} µs"
    if v < 1:
        return f"{v * 1e3:.3g} ms"
    return f"{v:.3g} s"


# ---------------------------------------------------------------------------
# The request mix for wrk.

MIX_LUA = r"""-- Generated by `python3 bench/dashboard.py mix-lua`: the claimgate demo's
-- requests in a fixed rotation. Environment:
--   MIX      weights of: groups token (200), token without groups (404),
--            no token (404), garbage token (401), token with a kid not in
--            the key set (401, triggers a rate-limited JWKS refetch);
--            default 7,1,1,1,0
--   PACE_MS  pause of each connection between requests (default 0)
local tokens = {
  %s,
  %s,
  nil,
  "some.invalid.token",
  %s,
}
local weights = {}
for w in string.gmatch(os.getenv("MIX") or "7,1,1,1,0", "%%d+") do
  weights[#weights + 1] = tonumber(w)
end
local pace = tonumber(os.getenv("PACE_MS") or "0")
local rotation = {}
for kind = 1, 5 do
  for _ = 1, (weights[kind] or 0) do rotation[#rotation + 1] = kind end
end
local i = 0

function request()
  i = i %% #rotation + 1
  local token = tokens[rotation[i]]
  if token == nil then
    return wrk.format("GET", "/headers")
  end
  return wrk.format("GET", "/headers", { ["Authorization"] = "Bearer " .. token })
end

function delay()
  return pace
end
"""


def mix_lua(groups_path, no_groups_path):
    groups = open(groups_path, encoding="ascii").read().strip()
    no_groups = open(no_groups_path, encoding="ascii").read().strip()
    # The groups token with its header's kid changed: a kid the key set lacks.
    head, payload, signature = groups.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header["kid"] = "rotated-away"
    head = base64.urlsafe_b64encode(json.dumps(header, separators=(",", ":")).encode()).rstrip(b"=").decode()
    unknown_kid = ".".join([head, payload, signature])
    return MIX_LUA % tuple(json.dumps(t) for t in (groups, no_groups, unknown_kid))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scrape", help="scrape /metrics into a JSON-lines file")
    s.add_argument("--url", default="http://127.0.0.1:15000/metrics")
    s.add_argument("--out", required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--interval", type=float, default=2.0)
    r = sub.add_parser("render", help="draw the dashboard PNG from a scrape file")
    r.add_argument("--in", dest="inp", required=True)
    r.add_argument("--out", default=os.path.join(root, "docs", "dashboard.png"))
    r.add_argument("--window", type=float, default=20.0, help="rate() window, seconds")
    r.add_argument("--columns", type=int, default=4)
    m = sub.add_parser("mix-lua", help="print the wrk script of the request mix")
    m.add_argument("--groups", default=os.path.join(root, "tests/fixtures/istio/groups-scope.jwt"))
    m.add_argument("--no-groups", default=os.path.join(root, "tests/fixtures/istio/demo.jwt"))
    a = p.parse_args()
    if a.cmd == "scrape":
        scrape(a.url, a.out, a.seconds, a.interval)
    elif a.cmd == "render":
        render(a.inp, a.out, a.window, a.columns)
    else:
        sys.stdout.write(mix_lua(a.groups, a.no_groups))


if __name__ == "__main__":
    main()
