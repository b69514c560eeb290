#!/usr/bin/env python3
"""Turns bench/run.sh's raw results into the markdown report."""
import argparse
import os
import platform
import subprocess

p = argparse.ArgumentParser()
p.add_argument("results")
p.add_argument("out")
p.add_argument("--duration")
p.add_argument("--connections")
p.add_argument("--gateway-hwm-kib", type=int)
p.add_argument("--rss-100k-kib", type=int)
p.add_argument("--cached")
p.add_argument("--soak", default="")
p.add_argument("--haproxy", type=int)
p.add_argument("--versions")
p.add_argument("--cache-memory", default="")
p.add_argument("--oha-results", default="")
a = p.parse_args()


def read_rows(path):
    rows = {}
    for line in open(path):
        label, result = line.rstrip("\n").split("\t")
        fields = dict(kv.split("=") for kv in result.split()[1:])
        impl, alg, scenario = label.split()
        f = {k: int(v) for k, v in fields.items()}
        f["rps"] = f["requests"] / (f["duration_us"] / 1e6)
        rows[(impl, alg, scenario)] = f
    return rows


rows = read_rows(a.results)
oha = read_rows(a.oha_results) if a.oha_results else {}

NAMES = {
    "A": "pass-through, no token (baseline)",
    "B": "one valid token, claim-routed (cache hit)",
    "C": "10,000 valid tokens in rotation",
    "D": "a token never seen before, every request",
    "E": "invalid signatures (401)",
    "F": "no token, no route (404)",
}
EXPECT = {"A": "2xx", "B": "2xx", "C": "2xx", "D": "2xx", "E": "401", "F": "404"}


def ms(us):
    return f"{us / 1000:.2f}"


cpu = "unknown"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass

out = []
out.append("## Load benchmark (`bench/run.sh`)\n")
out.append("Produced by `bench/run.sh` (the one command); every figure below comes from that run.\n")
out.append(f"- machine: {os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}; shared and noisy, so compare ratios within this run")
out.append(f"- versions: {a.versions}")
out.append(f"- load: `wrk -t1 -c{a.connections} -d{a.duration}s --latency -s bench/wrk.lua`, HTTP/1.1 keep-alive, 127.0.0.1; gateway and HAProxy with 1 worker thread, origin (`claimgate origin`) with 1")
out.append("- B and C are measured after a warm-up pass (the cache filled); D and E send tokens the gateway has never seen\n")
for alg in ("RS256", "ES256"):
    base = rows.get(("claimgate", alg, "A"))
    out.append(f"### {alg}\n")
    header = "| scenario | requests/s | p50 ms | p99 ms | p99.9 ms | / A | socket errors | answers |"
    sep = "|---|---:|---:|---:|---:|---:|---:|---|"
    if a.haproxy:
        header += " HAProxy requests/s | claimgate / HAProxy |"
        sep += "---:|---:|"
    out.append(header)
    out.append(sep)
    for s in "ABCDEF":
        r = rows.get(("claimgate", alg, s))
        if not r:
            continue
        ratio = f"{r['rps'] / base['rps']:.2f}" if base else "-"
        non2xx = r["non2xx"]
        answers = f"{EXPECT[s]}" + (f" ({non2xx} non-2xx)" if non2xx and EXPECT[s] == "2xx" else "")
        line = (f"| {s}. {NAMES[s]} | {r['rps']:,.0f} | {ms(r['p50_us'])} | {ms(r['p99_us'])} | {ms(r['p999_us'])} "
                f"| {ratio} | {r['socket_errors']} | {answers} |")
        if a.haproxy:
            h = rows.get(("haproxy", alg, s))
            line += (f" {h['rps']:,.0f} | {r['rps'] / h['rps']:.2f} |" if h else " - | - |")
        out.append(line)
    out.append("")

if oha:
    out.append("### oha cross-check\n")
    out.append(f"The same gateway in the same run, driven by `oha -z {a.duration}s -c {a.connections} --worker-threads 1` "
               "instead of wrk. oha sends one fixed request, so it covers the scenarios that need no token rotation "
               "(E with one invalid token, which is never cached).\n")
    out.append("| scenario | wrk requests/s | oha requests/s | oha p50 ms | oha p99 ms | oha / A | wrk / A | answers (oha) |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for alg in ("RS256", "ES256"):
        base, wbase = oha.get(("claimgate", alg, "A")), rows.get(("claimgate", alg, "A"))
        for s in "ABEF":
            o, w = oha.get(("claimgate", alg, s)), rows.get(("claimgate", alg, s))
            if not o:
                continue
            answers = EXPECT[s] + (f" ({o['non2xx']} non-2xx)" if o["non2xx"] and EXPECT[s] == "2xx" else "")
            out.append(f"| {alg} {s}. {NAMES[s]} | {w['rps']:,.0f} | {o['rps']:,.0f} | {ms(o['p50_us'])} | {ms(o['p99_us'])} "
                       f"| {o['rps'] / base['rps']:.2f} | {w['rps'] / wbase['rps']:.2f} | {answers} |" if w and base and wbase else
                       f"| {alg} {s}. {NAMES[s]} | - | {o['rps']:,.0f} | {ms(o['p50_us'])} | {ms(o['p99_us'])} | - | - | {answers} |")
    out.append("")

out.append("### Memory\n")
out.append(f"- peak RSS of the gateway over all scenarios above (cache of 10,000): {a.gateway_hwm_kib / 1024:.0f} MiB")
out.append(f"- RSS with the cache holding {a.cached} distinct ES256 tokens (of 100,000 sent; `jwtCacheSize: 100000`): {a.rss_100k_kib / 1024:.0f} MiB\n")
if a.cache_memory.strip():
    out.append("The cache alone (`target/release/examples/cache-memory`, 100,000 ES256 tokens validated and cached, no traffic):\n")
    out.append("    " + a.cache_memory.strip() + "\n")
if a.soak.strip():
    out.append("RSS over a soak of the 100,000-token rotation:\n")
    out.append("| after | RSS |")
    out.append("|---:|---:|")
    out.append(a.soak.rstrip("\n"))
    out.append("")
text = "\n".join(out) + "\n"
BEGIN, END = "<!-- load:begin -->", "<!-- load:end -->"
try:
    existing = open(a.out).read()
except FileNotFoundError:
    existing = ""
if BEGIN in existing and END in existing:
    head, rest = existing.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    text = f"{head}{BEGIN}\n{text}{END}{tail}"
elif existing:
    text = f"{existing.rstrip()}\n\n{BEGIN}\n{text}{END}\n"
else:
    text = f"{BEGIN}\n{text}{END}\n"
open(a.out, "w").write(text)
