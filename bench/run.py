"""`make bench`: the benchmark suite. `python -m bench.run [--quick] [--only NAME,...]`.

Each benchmark prints a table and writes JSON to bench/results/; the summary of
the run, with the machine it ran on, goes to bench/results/summary.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from bench import common

BENCHMARKS = (
    "ingest",
    "shipped",
    "reply",
    "pacing",
    "scale",
    "classifier",
    "send_rules",
    "transparency",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, small data (minutes)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get("BENCH_PG_URL", common.DEFAULT_PG),
        help="a PostgreSQL URL whose user may create databases (bench_* are created and dropped)",
    )
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="for ingest and shipped: sqlite,postgresql"
    )
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    started = time.time()
    machine = common.machine()
    print(f"machine: {json.dumps(machine)}", flush=True)
    tables = []
    if "ingest" in only:
        from bench import ingest

        tables.append(ingest.run(backends, args.pg_admin_url, args.quick)["table"])
    if "shipped" in only:
        from bench import shipped

        tables.append(shipped.run(backends, args.pg_admin_url, args.quick)["table"])
    if "reply" in only:
        from bench import reply_latency

        tables.append(reply_latency.run(args.pg_admin_url, args.quick)["table"])
    if "pacing" in only:
        from bench import pacing

        tables.append(pacing.run(args.pg_admin_url, args.quick)["table"])
    if "scale" in only:
        from bench import scale

        tables.append(scale.run(args.pg_admin_url, args.quick)["table"])
    if "classifier" in only:
        from bench import classifier

        tables.append(classifier.run(args.quick)["table"])
    if "send_rules" in only:
        from bench import send_rules

        tables.append(send_rules.run(args.pg_admin_url, args.quick)["table"])
    if "transparency" in only:
        from bench import transparency

        tables.append(transparency.run(args.pg_admin_url, args.quick)["table"])
    summary = [
        f"# Benchmark run ({'quick' if args.quick else 'full'}), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']}; "
        f"{machine['os']}",
        f"Versions: {json.dumps(machine['versions'])}",
        f"Took {time.time() - started:.0f} s.",
        *tables,
    ]
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    (common.RESULTS / "summary.md").write_text("\n".join(summary) + "\n")
    print(f"\nwrote {common.RESULTS / 'summary.md'}")


if __name__ == "__main__":
    main()
