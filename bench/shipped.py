"""Benchmark: the web tier as the Procfile ships it, and what each shipped feature costs.

The ingest benchmark (`bench/ingest.py`) compares the service with a bare Flask
endpoint *under the same gunicorn settings*, so the ceiling pays for the same
access log and threads and the ratio looks better than what ships. This one
measures the service exactly as `web: gunicorn "app:create_app()"` runs it
(gunicorn.conf.py: gthread workers with threads, JSON access log, multiprocess
metrics) against the neutral ceiling an outside harness would use: a bare Flask
endpoint under plain gunicorn (sync workers, one per core, no access log). It
reports both ratios, then takes each shipped feature away in turn to measure
what it costs:

- the JSON access log (`accesslog = None`);
- the webhook metrics (counted in prometheus_client's multiprocess files;
  `bench.variants` serves the app with the two counting hooks made no-ops);
- the threads (`worker_class = "sync"`, one request at a time per worker), and
  gthread with a single thread (what `GUNICORN_THREADS=1` gives).

Every variant gets the same fresh-database, same-load treatment as the ingest
benchmark (`bench.ingest._drive`: warm-up, closed-loop peak, open loop at half).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import PROJECT, app_env, cores, fresh_database, gunicorn, table, write_result
from bench.ingest import _drive
from tests.servers import free_port

SHIPPED_CONF = PROJECT / "gunicorn.conf.py"

# name -> (WSGI app, lines appended to the shipped config; None: a plain gunicorn config)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "bare Flask, plain gunicorn (ceiling)": ("bench.bare_app:create_app()", None),
    "bare Flask, shipped gunicorn.conf.py": ("bench.bare_app:create_app()", ""),
    "service as shipped (Procfile)": ("app:create_app()", ""),
    "service without the access log": ("app:create_app()", "accesslog = None\n"),
    "service without webhook metrics": ("bench.variants:app_without_metrics()", ""),
    "service without threads (sync)": (
        "app:create_app()",
        'worker_class = "sync"\nthreads = 1\n',
    ),
    # gthread with one thread: one request at a time, as sync, but the worker's heartbeat
    # keeps going during a long request (an export), which sync's 10 s timeout would kill.
    "service with one thread (gthread)": ("app:create_app()", "threads = 1\n"),
    "service without all three": (
        "bench.variants:app_without_metrics()",
        'accesslog = None\nworker_class = "sync"\nthreads = 1\n',
    ),
}
CEILING = "bare Flask, plain gunicorn (ceiling)"
BENCH_CEILING = "bare Flask, shipped gunicorn.conf.py"
SHIPPED = "service as shipped (Procfile)"


def config_file(folder: Path, name: str, overrides: str | None) -> Path:
    """A gunicorn config for one variant: the shipped file plus overrides, or a plain one."""
    path = folder / (name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", ""))
    path = path.with_suffix(".conf.py")
    if overrides is None:
        path.write_text(
            f"workers = {cores()}\nworker_class = 'sync'\naccesslog = None\n", encoding="utf-8"
        )
    else:
        shipped = SHIPPED_CONF.read_text(encoding="utf-8")
        path.write_text(
            f"__file__ = {str(SHIPPED_CONF)!r}\n{shipped}\n# bench override\n{overrides}",
            encoding="utf-8",
        )
    return path


def run(backends: list[str], pg_admin_url: str, quick: bool) -> dict:
    peak_s, warmup_s = (5.0, 2.0) if quick else (20.0, 5.0)
    results: dict = {"settings": {"peak_s": peak_s, "workers": cores()}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-shipped-") as tmp:
        workdir = Path(tmp)
        for backend in backends:
            measured = {}
            with fresh_database(backend, pg_admin_url, "shipped") as database:
                for seed, (name, (wsgi, overrides)) in enumerate(VARIANTS.items(), start=31):
                    port = free_port()
                    env = app_env(database.url, f"http://127.0.0.1:{port}")
                    conf = config_file(workdir, name, overrides)
                    log = workdir / f"{backend}-{seed}.log"
                    with gunicorn(wsgi, env, port, log, config=conf):
                        peak, half, _accepted = _drive(
                            port,
                            workdir,
                            f"{backend}-{seed}",
                            peak_s=peak_s,
                            warmup_s=warmup_s,
                            seed=seed,
                        )
                    measured[name] = {"peak": peak, "half": half}
            ceiling = measured[CEILING]["peak"]["requests_per_s"]
            shipped = measured[SHIPPED]["peak"]["requests_per_s"]
            results[backend] = {
                "variants": measured,
                "ratio_shipped_to_plain_ceiling": shipped / ceiling,
                "ratio_as_the_ingest_benchmark_measures": shipped
                / measured[BENCH_CEILING]["peak"]["requests_per_s"],
            }
            for name, figures in measured.items():
                rate = figures["peak"]["requests_per_s"]
                change = (
                    f"{(rate - shipped) / shipped:+.0%} vs shipped"
                    if name.startswith("service") and name != SHIPPED
                    else ""
                )
                rows.append(
                    (
                        backend,
                        name,
                        f"{rate:.0f}",
                        f"{rate / ceiling:.2f}",
                        change,
                        f"{figures['half']['latency_ms']['p50']:.1f} / "
                        f"{figures['half']['latency_ms']['p99']:.1f}",
                    )
                )
            rows.append(
                (
                    backend,
                    "ratio: shipped / plain ceiling (benchmark config's ratio)",
                    "",
                    f"{results[backend]['ratio_shipped_to_plain_ceiling']:.2f}",
                    f"({results[backend]['ratio_as_the_ingest_benchmark_measures']:.2f})",
                    "",
                )
            )
    results["table"] = table(
        f"The web tier as shipped, and the cost of each feature ({cores()} workers)",
        rows,
        ("backend", "variant", "peak req/s", "ratio to ceiling", "change", "half-peak p50/p99 ms"),
    )
    write_result("shipped", results)
    return results
