"""Where an execute-sync request's CPU goes: requests through Django in this process, profiled.

It sets up a temporary data dir (SQLite, or the MariaDB of --database-url, which must exist), migrates, makes
an API key and a real process-runtime session, sends --warmup unprofiled requests, then times --runs
requests without the profiler and --runs under pyinstrument, and prints the SQL of one request, the CPU per
request both ways, and the profile. The requests go through Django's test client: the whole middleware
stack, DRF, the services and the executor client, but not uvicorn and the ASGI handler (about 1 ms of CPU per
request more; bench/throughput.py measures the served product).

Usage: python bench/profile_execute.py [--runs 200] [--warmup 20] [--database-url mysql://...]
       [--redis-url redis://127.0.0.1:6379/N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

HANDLER = "def handler(event, context):\n    return 1\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--database-url", default="", help="default: SQLite in the temporary data dir")
    parser.add_argument("--redis-url", default="", help="channel layer and broker (default: none)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)

    data_dir = tempfile.mkdtemp(prefix="bench-profile-", dir="/tmp")
    os.environ.update({"SANDBOX_DATA_DIR": data_dir, "LOG_LEVEL": "WARNING"})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sandbox_site.settings")
    for name, value in (("DATABASE_URL", args.database_url), ("REDIS_URL", args.redis_url)):
        if value:
            os.environ[name] = value
        else:
            os.environ.pop(name, None)

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from pyinstrument import Profiler

    from sessions_app.models import ApiKey
    from sessions_app.services import session_create, session_provision, session_terminate
    from templates_app.models import SandboxTemplate

    call_command("migrate", verbosity=0, interactive=False)
    owner = django.contrib.auth.get_user_model().objects.create_user(f"profile-{os.getpid()}")
    _, raw_key = ApiKey.objects.create_key(owner=owner, name="profile")
    template = SandboxTemplate.objects.get(pk="python-basic")
    session = session_provision(session=session_create(owner=owner, template=template, timeout=3600))
    if session.status != "running":
        raise SystemExit(f"the session did not start: {session.status} {session.status_detail}")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    path = f"/api/v1/sessions/{session.client_id}/execute-sync"
    body = json.dumps({"language": "python", "code": HANDLER})

    def request() -> None:
        response = client.post(path, body, content_type="application/json")
        if response.status_code != 200 or response.json().get("return_value") != 1:
            raise SystemExit(f"execute-sync answered {response.status_code}: {response.content[:300]!r}")

    try:
        for _ in range(args.warmup):
            request()
        with CaptureQueriesContext(connection) as captured:
            request()
        # Read now: the next request's start clears the log the context reads from.
        statements = [query["sql"] for query in captured.captured_queries]
        started = time.process_time()
        for _ in range(args.runs):
            request()
        plain = (time.process_time() - started) * 1000 / args.runs
        profiler = Profiler(interval=0.0005)
        started = time.process_time()
        with profiler:
            for _ in range(args.runs):
                request()
        profiled = (time.process_time() - started) * 1000 / args.runs
    finally:
        session_terminate(session=session)
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"SQL of one execute-sync ({len(statements)} statements):")
    for sql in statements:
        print(f"  {sql[:160]}")
    print(
        f"CPU per request in this process: {plain:.2f} ms ({profiled:.2f} ms under the profiler); "
        f"{'MariaDB' if args.database_url else 'SQLite'}{' + Redis' if args.redis_url else ''}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(profiler.output_text(unicode=False, color=False, show_all=False))
    if args.json:
        print(json.dumps({"cpu_per_request_ms": round(plain, 3), "statements": len(statements)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
