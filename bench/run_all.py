"""Every benchmark in one command (``make bench``), summarised in one table.

Runs, each as its own process, whichever of these exist:

- ``bench_mcp.py``: ``/mcp`` get_ticker/place_order calls/s and p50/p99 vs a bare FastMCP server
  (wrk, same run; the ratio column is ours / bare at the same connection count);
- ``bench_mcp_ws.py``: the same over WebSocket (ratio ours / bare);
- ``bench_orders.py``: orders/s through the service layer, on SQLite and, when reachable, on
  PostgreSQL (``--pg-url``; the ratio column is PostgreSQL / SQLite);
- ``bench_marketdata.py``: stream messages/s ingested (batched vs unbatched; ratio batched /
  unbatched) and indicator time;
- ``bench_dashboard.py``: tick → browser DOM latency and WebSocket fan-out;
- any other ``bench_*.py`` (e.g. ``bench_trust.py``), run with its defaults; its ``<label> <number>
  <unit>`` lines are listed.

A bench that does not take rounds itself (``bench_orders.py``) is run ``--rounds`` times and the
median taken; the others get ``--rounds`` and report their own medians (``bench_marketdata.py``
reports the best round, as its own output says). The table states the machine (cores, load,
Python), the configuration of each run, and where each figure came from; the raw output of every
bench is kept in ``var/bench/run_all-<bench>.log``. Not a test: it asserts nothing.

Run: ``.venv/bin/python bench/run_all.py [--rounds 3] [--quick] [--only mcp,orders] [--pg-url URL]``.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LOGS = ROOT / "var" / "bench"


def run(name: str, args: list[str], env: dict, timeout: float) -> str:
    """Run ``bench/<name>`` with ``args``; return its stdout+stderr (also written to the log)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(BENCH / name), *args]
    print(f"running {' '.join(cmd[1:])} ...", flush=True)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        out = proc.stdout + proc.stderr
        if proc.returncode:
            out += f"\n[exit status {proc.returncode}]"
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        out += f"\n[timed out after {timeout:.0f} s]"
    (LOGS / f"run_all-{Path(name).stem}{'-' + env.get('_RUN_TAG', '') if env.get('_RUN_TAG') else ''}.log").write_text(out)
    print(f"  done in {time.monotonic() - t0:.0f} s", flush=True)
    return out


def num(text: str) -> float:
    return float(text.replace(",", ""))


# --- parsers: one per bench's printed format -------------------------------------------------------

def parse_mcp(out: str) -> list[dict]:
    rows = []
    for m in re.finditer(r"^(bare|ours)\s+([\w*]+)\s+(\d+)\s+([\d.]+)\s+([\d.]+|nan)\s+([\d.]+|nan)\s+(\d+)\s+([\d.]+|nan)$", out, re.M):
        server, tool, conns, rps, p50, p99, _non2xx, ratio = m.groups()
        rows.append({"metric": f"MCP {tool} ({server}) calls/s", "config": f"{conns} conns, HTTP",
                     "value": num(rps), "unit": "/s", "extra": f"p50 {p50} ms, p99 {p99} ms",
                     "ratio": num(ratio) if server == "ours" else None, "vs": "bare FastMCP get_ticker"})
    return rows


def parse_mcp_ws(out: str) -> list[dict]:
    rows = []
    pat = r"^(\w+)\s+(\d+)\s+\|\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\|\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\|\s+([\d.]+)"
    for m in re.finditer(pat, out, re.M):
        transport, conns, b_rps, _b50, _b99, o_rps, o50, o99, ratio = m.groups()
        rows.append({"metric": "MCP get_ticker (ours) calls/s", "config": f"{conns} conns, {transport}", "value": num(o_rps),
                     "unit": "/s", "extra": f"p50 {o50} ms, p99 {o99} ms; bare {num(b_rps):.0f}/s", "ratio": num(ratio),
                     "vs": "bare FastMCP, same transport"})
    return rows


def parse_orders(outs: list[str], db: str) -> list[dict]:
    """Median over runs of each ``label  N /s`` line."""
    per_label: dict[str, list[float]] = {}
    for out in outs:
        for m in re.finditer(r"^\s{2}(\S.*?)\s+([\d.]+) /s\s+\(", out, re.M):
            per_label.setdefault(m.group(1).strip(), []).append(num(m.group(2)))
    return [{"metric": label, "config": f"{db}, median of {len(v)} runs", "value": statistics.median(v), "unit": "/s",
             "extra": f"runs: {', '.join(f'{x:.0f}' for x in v)}", "ratio": None, "vs": ""} for label, v in per_label.items()]


def parse_marketdata(out: str) -> list[dict]:
    rows = []
    unbatched = re.search(r"no batching.*?:\s+([\d,]+) msg/s", out)
    base = num(unbatched.group(1)) if unbatched else None
    label = ""
    for line in out.splitlines():
        head = re.match(r"^\s{2}(push [^:]+):$", line)
        if head:
            label = "push coalesced" if "coalesced" in head.group(1) else "push per flush"
        m = re.search(r"flush every\s+([\d,]+) messages:\s+([\d,]+) msg/s", line)
        if m:
            value = num(m.group(2))
            rows.append({"metric": f"stream messages ingested ({label})", "config": f"flush every {m.group(1)} msgs, best rnd",
                         "value": value, "unit": "msg/s", "extra": "", "ratio": value / base if base else None, "vs": "unbatched"})
    if base:
        rows.append({"metric": "stream messages ingested", "config": "no batching", "value": base, "unit": "msg/s",
                     "extra": "", "ratio": 1.0, "vs": "unbatched"})
    total = re.search(r"^\s+total:\s+([\d.]+) s", out, re.M)
    head = re.search(r"indicators: default set \+ signals, (.*)", out)
    if total:
        rows.append({"metric": "indicators + signals", "config": head.group(1) if head else "", "value": num(total.group(1)),
                     "unit": "s", "extra": "", "ratio": None, "vs": ""})
    return rows


def parse_dashboard(out: str) -> list[dict]:
    rows = []
    dom = re.search(r"^\s+p50 ([\d.]+) ms\s+p90 ([\d.]+) ms\s+p99 ([\d.]+) ms\s+max ([\d.]+) ms", out, re.M)
    n = re.search(r"DOM .*?, (\d+) updates", out)
    if dom:
        rows.append({"metric": "tick -> browser DOM latency p50", "config": f"{n.group(1) if n else '?'} updates",
                     "value": num(dom.group(1)), "unit": "ms", "extra": f"p90 {dom.group(2)} ms, p99 {dom.group(3)} ms",
                     "ratio": None, "vs": ""})
    for m in re.finditer(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)%\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", out, re.M):
        clients, connected, failed_, share, p50, p99, _mx, rss = m.groups()
        rows.append({"metric": "WebSocket fan-out, 1 msg/s per client, p99", "config": f"{clients} clients, 1 web process",
                     "value": num(p99), "unit": "ms", "extra": f"{share}% delivered, p50 {p50} ms, {connected} connected, "
                     f"{failed_} failed, RSS {rss} MB", "ratio": None, "vs": ""})
    held = re.search(r"holds: (\d+) clients", out)
    if held:
        rows.append({"metric": "WebSocket clients held (>=99.9% delivered, p99<1s)", "config": "1 web process",
                     "value": num(held.group(1)), "unit": "", "extra": "", "ratio": None, "vs": ""})
    return rows


def parse_generic(out: str, name: str) -> list[dict]:
    """``<label>  <number> <unit>`` lines, for benches this script does not know (e.g. bench_trust.py)."""
    rows = []
    for m in re.finditer(r"^\s*(\S.{2,60}?)[:\s]\s+([\d,]+(?:\.\d+)?)\s*(µs|ms|s|/s|msg/s)\s*$", out, re.M):
        rows.append({"metric": f"{name}: {m.group(1).strip()}", "config": "defaults", "value": num(m.group(2)),
                     "unit": m.group(3), "extra": "", "ratio": None, "vs": ""})
    return rows


def failed(out: str) -> str | None:
    m = re.search(r"\[(exit status \d+|timed out after \d+ s)\]", out)
    if not m:
        return None
    lines = [ln for ln in out.strip().splitlines() if ln.strip() and not ln.startswith("[")]
    return f"{m.group(1)}: {lines[-1][:100] if lines else ''}"


# --- PostgreSQL for bench_orders ---------------------------------------------------------------------

def postgres_ready(url: str) -> bool:
    """Is PostgreSQL at ``url`` reachable? Creates the named database if it is missing."""
    try:
        import psycopg
    except ImportError:
        return False
    from urllib.parse import urlparse

    u = urlparse(url)
    dbname = u.path.lstrip("/")
    admin = u._replace(path="/postgres").geturl()
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                conn.execute(f'CREATE DATABASE "{dbname}"')
        return True
    except Exception as exc:
        print(f"PostgreSQL at {url} not available ({type(exc).__name__}); orders on PostgreSQL skipped", flush=True)
        return False


def fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}" if abs(v) < 10 else f"{v:,.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds per bench (medians)")
    ap.add_argument("--quick", action="store_true", help="short runs (for a smoke check; figures are noisier)")
    ap.add_argument("--only", default="", help="comma-separated subset: mcp,mcp_ws,orders,marketdata,dashboard,trust,...")
    ap.add_argument("--pg-url", default=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/tradingmcp_bench"))
    ap.add_argument("--workers", type=int, default=1, help="web workers for the MCP benches")
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    want = (lambda key: not only or key in only)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    env.pop("DATABASE_URL", None)
    rounds = max(1, args.rounds)
    duration = "2" if args.quick else "4"
    sections: list[tuple[str, str, list[dict], str | None]] = []  # (bench, configuration, rows, failure)

    if want("mcp") and (BENCH / "bench_mcp.py").exists():
        cfg = ["--rounds", str(rounds), "--duration", duration, "--workers", str(args.workers)]
        out = run("bench_mcp.py", cfg, env, timeout=1800)
        sections.append(("bench_mcp.py", f"SQLite, uvicorn x{args.workers}, wrk {duration} s x {rounds}", parse_mcp(out), failed(out)))
    if want("mcp_ws") and (BENCH / "bench_mcp_ws.py").exists():
        cfg = ["--rounds", str(rounds), "--duration", duration, "--workers", str(args.workers)]
        out = run("bench_mcp_ws.py", cfg, env, timeout=1800)
        sections.append(("bench_mcp_ws.py", f"SQLite, uvicorn x{args.workers}, {duration} s x {rounds}", parse_mcp_ws(out), failed(out)))
    if want("orders") and (BENCH / "bench_orders.py").exists():
        n = "300" if args.quick else "1000"
        targets = [("SQLite", {})]
        if postgres_ready(args.pg_url):
            targets.append(("PostgreSQL", {"DATABASE_URL": args.pg_url}))
        medians: dict[str, dict[str, float]] = {}
        for db, extra in targets:
            outs = [run("bench_orders.py", ["-n", n, "--threads", "4"], {**env, **extra, "_RUN_TAG": f"{db}-{i}"}, timeout=1800)
                    for i in range(rounds)]
            rows = parse_orders(outs, db)
            medians[db] = {r["metric"]: r["value"] for r in rows}
            if db == "PostgreSQL":
                for r in rows:
                    base = medians["SQLite"].get(r["metric"])
                    r["ratio"], r["vs"] = (r["value"] / base if base else None), "SQLite"
            sections.append((f"bench_orders.py ({db})", f"{db}, -n {n}, 4 threads", rows, next(filter(None, map(failed, outs)), None)))
    if want("marketdata") and (BENCH / "bench_marketdata.py").exists():
        cfg = ["--rounds", str(rounds)] + (["--messages", "50000", "--symbols", "100"] if args.quick else [])
        out = run("bench_marketdata.py", cfg, env, timeout=1800)
        sections.append(("bench_marketdata.py", " ".join(cfg), parse_marketdata(out), failed(out)))
    if want("dashboard") and (BENCH / "bench_dashboard.py").exists():
        cfg = ["--seconds", "10", "--clients", "100,250", "--fanout-seconds", "5"] if args.quick else []
        out = run("bench_dashboard.py", cfg, env, timeout=1800)
        sections.append(("bench_dashboard.py", " ".join(cfg) or "defaults", parse_dashboard(out), failed(out)))
    known = {"bench_mcp.py", "bench_mcp_ws.py", "bench_orders.py", "bench_marketdata.py", "bench_dashboard.py"}
    for path in sorted(BENCH.glob("bench_*.py")):
        if path.name not in known and want(path.stem.removeprefix("bench_")):
            out = run(path.name, [], env, timeout=1800)
            sections.append((path.name, "defaults", parse_generic(out, path.stem.removeprefix("bench_")), failed(out)))

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print()
    print(f"TradingMCP benchmarks — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {os.cpu_count()} cores ({platform.machine()}), {platform.system()} {platform.release()}, "
          f"Python {platform.python_version()}; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          "(a shared machine: treat differences under ~25 % as noise)")
    print(f"Redis {env['REDIS_URL']}; rounds {rounds}{' (quick)' if args.quick else ''}; raw output in {LOGS.relative_to(ROOT)}/run_all-*.log")
    width = 58
    header = f"{'metric':<{width}} {'configuration':<34} {'median':>12} {'unit':<6} {'ratio':>7}  {'ratio vs / notes'}"
    for bench, cfg, rows, failure in sections:
        print()
        print(f"== {bench}: {cfg}")
        if failure:
            print(f"   FAILED ({failure}); see its log")
        if not rows:
            print("   (no figures parsed)")
            continue
        print(header)
        for r in rows:
            ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "—"
            notes = "; ".join(x for x in (r.get("vs") and f"vs {r['vs']}", r.get("extra")) if x)
            print(f"{r['metric'][:width]:<{width}} {r['config'][:34]:<34} {fmt(r['value']):>12} {r['unit']:<6} {ratio:>7}  {notes}")


if __name__ == "__main__":
    main()
