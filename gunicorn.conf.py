"""gunicorn settings, read by `gunicorn "app:create_app()"` (the Procfile's web process).

- **Workers**: one process per core (`WEB_CONCURRENCY` overrides), each with
  `GUNICORN_THREADS` threads (default 4), so a worker keeps a core busy while one
  request waits for the database.
- **Timeouts below Twilio's 15 s**: Twilio gives up on a webhook after 15 s (and
  then tries the fallback URL), so a worker that has not answered in 10 s is
  restarted rather than left holding requests Twilio has already abandoned.
- **Graceful shutdown**: on SIGTERM gunicorn stops accepting, lets requests in
  flight finish for up to `graceful_timeout` (20 s, inside the 30 s a Heroku-style
  platform waits before SIGKILL), then exits.
- **Logs**: gunicorn's own lines and the access log go through `app.logs`, in the
  `LOG_FORMAT` (json by default) the app uses, with the request id.
- **Warm keywords**: each worker builds the opt-out lexicon from its shipped
  table of forms (a fraction of a second) before it serves, so no text waits for it.
- **Metrics**: `PROMETHEUS_MULTIPROC_DIR` is pointed at a fresh directory before
  the workers start, so `/metrics` adds up every worker's counts (`app.web.metrics`).

The listen address comes from $PORT when set (gunicorn's default), else
127.0.0.1:8000. Every value can be overridden on the command line or with
GUNICORN_CMD_ARGS.
"""

import glob
import multiprocessing
import os
import shutil
import tempfile

from app.logs import gunicorn_logconfig

workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count())
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS") or 4)
timeout = 10
graceful_timeout = 20
keepalive = 2

accesslog = "-"
# Method, path without the query string, status, duration: no client data. The request
# id (our X-Request-Id response header) is added as a field by app.logs.GunicornAccessFields.
access_log_format = "%(m)s %(U)s %(s)s %(D)sus"
logconfig_dict = gunicorn_logconfig()

# Set before any worker imports prometheus_client (workers import the app after the fork).
_created_metrics_dir = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _created_metrics_dir = tempfile.mkdtemp(prefix="scg-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _created_metrics_dir


def on_starting(server):
    """Counts from an earlier run must not be added to this one's."""
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def post_worker_init(worker):
    """Build the keyword lexicon now, before this worker takes its first webhook."""
    from app.core.keywords import warm

    warm()


def child_exit(server, worker):
    """A dead worker's live gauges must not linger (its counters are kept, as they should)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _created_metrics_dir:
        shutil.rmtree(_created_metrics_dir, ignore_errors=True)
