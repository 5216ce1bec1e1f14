"""gunicorn settings, read by `gunicorn "app:create_app()"` (the Procfile's web process).

One worker process per core, each with a few threads, so that a worker keeps a
core busy while one request waits for the database. The listen address comes
from $PORT when set (gunicorn's default), else 127.0.0.1:8000. Every value can
be overridden on the command line or with GUNICORN_CMD_ARGS.
"""

import multiprocessing
import os

workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count())
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS") or 4)
timeout = 30
graceful_timeout = 20
keepalive = 2
