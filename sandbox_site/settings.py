"""Settings for Sandbox Control Plane, driven entirely by the environment (the table in README.md).

With nothing set this is the embedded default: SQLite under SANDBOX_DATA_DIR, local file storage, the
`process` runtime, django-q2 on the ORM broker and an in-process channel layer. A malformed variable stops
start-up with ImproperlyConfigured naming it.
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from runtime.base import RuntimeFailure
from runtime.packages.index_policy import parse_allow as parse_index_allow
from runtime.registry import DEFAULT_RUNTIME, available_runtimes
from runtime.registry import config_from_settings as runtime_config_from_settings
from sandbox_site.data_dir import create_private_file
from sandbox_site.env import Env, parse_database_url

env = Env()

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env.string("SANDBOX_DATA_DIR", str(BASE_DIR / "data"))).resolve()
DEBUG = env.boolean("DJANGO_DEBUG", False)


def _secret_key() -> str:
    configured = env.string("DJANGO_SECRET_KEY")
    if configured:
        return configured
    # The embedded default keeps a generated key in the data dir so sessions survive restarts.
    key_file = DATA_DIR / "secret_key"
    try:
        if key_file.exists():
            return key_file.read_text().strip()
        DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)  # see sandbox_site/data_dir.py
        key = secrets.token_urlsafe(50)
        create_private_file(key_file, key)
        return key
    except OSError as exc:
        raise ImproperlyConfigured(
            f"SANDBOX_DATA_DIR={str(DATA_DIR)!r} is not writable: {exc.strerror}"
        ) from exc


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env.items("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.items("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_q",
    "sandbox_site",
    "templates_app",
    "sessions_app",
    "executions_app",
    "axes",
]

MIDDLEWARE = [
    # django-prometheus's HTTP metrics (the ones its dashboards chart), outermost: it times the whole stack.
    "sandbox_site.metrics.http.HttpMetricsMiddleware",
    "sandbox_site.request_id.RequestIdMiddleware",
    "sandbox_site.csp.ContentSecurityPolicyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page (429).
    "axes.middleware.AxesMiddleware",
]

# --- login throttling (django-axes) ---------------------------------------------------------------------
# Password logins (console and admin) are counted per username and client address together: after
# SANDBOX_LOGIN_FAILURE_LIMIT failures that pair is refused (429) for SANDBOX_LOGIN_COOLOFF seconds, while
# the same user from elsewhere and other users from the same address still get in. API keys are not
# passwords and never pass through here. The address is REMOTE_ADDR (behind a proxy: run uvicorn with
# --proxy-headers and --forwarded-allow-ips, so X-Forwarded-For is believed from the proxy alone).
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.integer("SANDBOX_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env.integer("SANDBOX_LOGIN_COOLOFF", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

# Besides the Content-Security-Policy (sandbox_site/csp.py): never sniffed, never framed, no referrer to
# other sites (Django's defaults, spelled out because the console depends on them).
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

ROOT_URLCONF = "sandbox_site.urls"
ASGI_APPLICATION = "sandbox_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "sandbox_site" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- database -------------------------------------------------------------------------------------------

_database_url = env.string("DATABASE_URL")
if _database_url:
    _db = parse_database_url("DATABASE_URL", _database_url)
else:
    _db = parse_database_url("DATABASE_URL", f"sqlite:///{DATA_DIR / 'sandbox.sqlite3'}")

DATABASES: dict[str, dict[str, Any]]
if _db.engine == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _db.name,
            # Request threads are kept (sandbox_site/request_threads.py), and so are their connections.
            "CONN_MAX_AGE": env.integer("DATABASE_CONN_MAX_AGE", 60, minimum=0),
            # WAL lets the web and worker processes read while one writes; IMMEDIATE takes the write lock at
            # BEGIN, so a transaction never fails half-way with "database is locked" on lock upgrade.
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not memory: tests start real worker and server processes that share the database.
            # One per test run, so concurrent runs never share (or delete) each other's.
            "TEST": {"NAME": str(DATA_DIR / f"test-sandbox-{os.getpid()}.sqlite3")},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": _db.name,
            "USER": _db.user,
            "PASSWORD": env.string("DATABASE_PASSWORD", _db.password),
            "HOST": _db.host,
            "PORT": _db.port,
            "CONN_MAX_AGE": env.integer("DATABASE_CONN_MAX_AGE", 60, minimum=0),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                "charset": "utf8mb4",
                "isolation_level": "read committed",
                "init_command": "SET sql_mode='STRICT_TRANS_TABLES'",
            },
            "TEST": {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"},
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# django_q's Task model has a conditional index that MariaDB ignores; nothing of ours depends on it.
SILENCED_SYSTEM_CHECKS = ["models.W037"]

# --- auth, i18n, static ---------------------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Dates and times read the same in the console and the admin: 2026-12-05 18:13:17 UTC.
FORMAT_MODULE_PATH = ["sandbox_site.formats"]

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# The image collects static files at build time into a directory of its own (deploy/Dockerfile).
STATIC_ROOT = Path(env.string("SANDBOX_STATIC_ROOT", str(DATA_DIR / "staticfiles")))
MEDIA_ROOT = DATA_DIR / "media"
# Stored workspaces (local storage) are the tenants' files: readable by the control plane's user only.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# --- object storage -------------------------------------------------------------------------------------

SANDBOX_S3_BUCKET = env.string("SANDBOX_S3_BUCKET")
if SANDBOX_S3_BUCKET:
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config as BotoConfig

    # Workspace files of up to 100 MiB stream through in 8 MiB parts, at most two of them in memory at once
    # (boto3's default keeps up to ten parts of a non-seekable stream in memory).
    _transfer_config = TransferConfig(
        multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024, max_concurrency=2
    )
    _transfer_config.max_in_memory_upload_chunks = 2
    _addressing = "path" if env.boolean("SANDBOX_S3_PATH_STYLE", True) else "virtual"
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": SANDBOX_S3_BUCKET,
            "endpoint_url": env.url("SANDBOX_S3_ENDPOINT_URL", ("http", "https")) or None,
            "region_name": env.string("SANDBOX_S3_REGION", "us-east-1"),
            "access_key": env.string("SANDBOX_S3_ACCESS_KEY_ID") or None,
            "secret_key": env.string("SANDBOX_S3_SECRET_ACCESS_KEY") or None,
            "default_acl": None,
            "file_overwrite": True,
            "transfer_config": _transfer_config,
            # Path-style addressing for MinIO and moto; an unreachable store fails a request (and
            # /health/detailed) within seconds, not minutes.
            "addressing_style": _addressing,
            "client_config": BotoConfig(
                s3={"addressing_style": _addressing},
                connect_timeout=5,
                read_timeout=60,
                retries={"mode": "standard", "max_attempts": 3},
            ),
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT), "allow_overwrite": True},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- redis, channels, django-q2 -------------------------------------------------------------------------

REDIS_URL = env.url("REDIS_URL", ("redis", "rediss", "unix"))

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": "sandbox:channels:"},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

Q_CLUSTER: dict[str, Any] = {
    "name": "sandbox",
    "workers": env.integer("SANDBOX_WORKERS", 4, minimum=1, maximum=256),
    # A task may run an execution of up to an hour; the broker must not hand it out again meanwhile.
    "timeout": 3900,
    "retry": 4000,
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "poll": 0.2,
    "label": "Task queue",
}
# Provisioning has a cluster (and queue) of its own: a sandbox start never waits behind dependency installs,
# warm-pool refills or housekeeping in the default cluster. `run_worker` starts both clusters and the
# execution stream pool (executions_app/streams.py); executions never occupy a worker process.
SANDBOX_PROVISION_CLUSTER = "provision"
Q_CLUSTER["ALT_CLUSTERS"] = {
    SANDBOX_PROVISION_CLUSTER: {
        "workers": env.integer("SANDBOX_PROVISION_WORKERS", 2, minimum=1, maximum=64),
        # A sandbox start is bounded by SANDBOX_CREATING_TIMEOUT; the sweep fails it after that.
        "timeout": 900,
        "retry": 1000,
        "max_attempts": 1,
        "label": "Provisioning queue",
    }
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- REST framework -------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "sandbox_site.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["sandbox_site.api.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "EXCEPTION_HANDLER": "sandbox_site.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sandbox Control Plane API",
    "DESCRIPTION": "Sessions, executions, files and templates of a platform that runs untrusted code for agents.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
}
# Execution requests carry up to 1 MiB of code and 1 MiB of event; file uploads are streamed separately.
# Bodies over these limits are refused from their Content-Length before anything is read, and a chunked
# body is cut off once it passes them (sandbox_site/body_guard.py): SANDBOX_MAX_REQUEST_BYTES for every
# request but uploads, SANDBOX_MAX_UPLOAD_REQUEST_BYTES for the upload endpoints (a 100 MiB file plus
# multipart framing). The JSON parser's own bound is the same number.
SANDBOX_MAX_REQUEST_BYTES = env.integer("SANDBOX_MAX_REQUEST_BYTES", 3 * 1024 * 1024, minimum=64 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = SANDBOX_MAX_REQUEST_BYTES
SANDBOX_MAX_UPLOAD_REQUEST_BYTES = env.integer(
    "SANDBOX_MAX_UPLOAD_REQUEST_BYTES", 100 * 1024 * 1024 + 64 * 1024, minimum=64 * 1024
)
# Web server processes `manage.py serve` runs (uvicorn workers, one event loop each); default: one per core.
SANDBOX_WEB_WORKERS = env.integer(
    "SANDBOX_WEB_WORKERS", len(os.sched_getaffinity(0)) or 1, minimum=1, maximum=256
)
# Addresses of reverse proxies whose X-Forwarded-For/-Proto uvicorn believes (comma-separated IPs or networks,
# passed to uvicorn as --forwarded-allow-ips). Empty: no proxy is believed, as daphne did.
SANDBOX_FORWARDED_ALLOW_IPS = ",".join(env.items("SANDBOX_FORWARDED_ALLOW_IPS", []))

# --- the product ----------------------------------------------------------------------------------------

RUNTIME_CHOICES = tuple(available_runtimes())  # the backends runtime/registry.py lists
SANDBOX_RUNTIME = env.choice("SANDBOX_RUNTIME", DEFAULT_RUNTIME, RUNTIME_CHOICES)
SANDBOX_ALLOW_UNISOLATED = env.boolean("SANDBOX_ALLOW_UNISOLATED", False)
SANDBOX_DOCKER_URL = env.url("SANDBOX_DOCKER_URL", ("unix", "tcp", "http", "https", "ssh"))
# The kubernetes runtime (runtime/kubernetes; the kubeconfig comes from KUBECONFIG or in-cluster config).
# Node selector: "key=value,key=value" or JSON; tolerations: a JSON list of core/v1 Toleration objects.
SANDBOX_K8S_NAMESPACE = env.string("SANDBOX_K8S_NAMESPACE", "default")
SANDBOX_K8S_IMAGE_PULL_POLICY = env.choice(
    "SANDBOX_K8S_IMAGE_PULL_POLICY", "IfNotPresent", ("Always", "IfNotPresent", "Never")
)
SANDBOX_K8S_RUNTIME_CLASS = env.string("SANDBOX_K8S_RUNTIME_CLASS", "")
SANDBOX_K8S_NODE_SELECTOR = env.string("SANDBOX_K8S_NODE_SELECTOR", "")
SANDBOX_K8S_TOLERATIONS = env.string("SANDBOX_K8S_TOLERATIONS", "")
SANDBOX_K8S_POD_START_TIMEOUT = env.integer("SANDBOX_K8S_POD_START_TIMEOUT", 60, minimum=1)
# The label value naming this control plane's pods: state sync removes only pods of its own instance, so two
# control planes (or a test run beside a dev server) can share a namespace.
SANDBOX_K8S_INSTANCE = env.string("SANDBOX_K8S_INSTANCE", "default")
# Each pod's first init container (root with NET_ADMIN alone) takes every interface but lo down, so the sandbox
# has no network whatever the CNI. Clusters whose admission forbids that set it false and rely on the deny-all
# NetworkPolicy, which only a CNI enforcing policies applies.
SANDBOX_K8S_ISOLATE_NETWORK = env.boolean("SANDBOX_K8S_ISOLATE_NETWORK", True)
SANDBOX_MAX_SESSIONS_PER_KEY = env.integer("SANDBOX_MAX_SESSIONS_PER_KEY", 20, minimum=1)
SANDBOX_MAX_LIFETIME = env.integer("SANDBOX_MAX_LIFETIME", 24 * 3600, minimum=60)
SANDBOX_CA_BUNDLE = env.string("SANDBOX_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
# Per-session Python dependencies (docs/dependencies.md): pip's index (empty: PyPI), the control plane's
# package store (wheels by sha256, sealed install trees; no sandbox writes it), and how long one install
# may take.
SANDBOX_PACKAGE_INDEX_URL = env.url("SANDBOX_PACKAGE_INDEX_URL", ("http", "https"))
# Hosts, addresses or networks a package index may reach besides public addresses (runtime/packages/index_policy.py):
# comma-separated `host`, `host:port`, `10.0.0.0/8`, `10.1.2.3:3141`, `[fd00::1]:3141`. Empty: public only.
SANDBOX_PACKAGE_INDEX_ALLOW = env.string("SANDBOX_PACKAGE_INDEX_ALLOW", "")
try:
    parse_index_allow(SANDBOX_PACKAGE_INDEX_ALLOW)
except ValueError as _exc:
    raise ImproperlyConfigured(str(_exc)) from None
SANDBOX_PIP_CACHE_DIR = env.string("SANDBOX_PIP_CACHE_DIR", str(DATA_DIR / "pip-cache"))
SANDBOX_INSTALL_TIMEOUT = env.integer("SANDBOX_INSTALL_TIMEOUT", 600, minimum=10, maximum=3600)
# Seconds an installed package tree is reused for an identical request in another session (0: always pip).
SANDBOX_PACKAGE_CACHE_TTL = env.integer("SANDBOX_PACKAGE_CACHE_TTL", 3600, minimum=0)
# Downloads of stored files bigger than this many bytes redirect to a presigned S3 URL (0: never).
SANDBOX_PRESIGN_OVER = env.integer("SANDBOX_PRESIGN_OVER", 0, minimum=0)
SANDBOX_PRESIGN_EXPIRY = env.integer("SANDBOX_PRESIGN_EXPIRY", 300, minimum=10, maximum=7 * 24 * 3600)

# Lifecycle (seconds). django-q2's scheduler looks at schedules every 30 s, so intervals are rounded up to
# whole minutes for the periodic schedules; leases and timeouts are exact.
SANDBOX_CREATING_TIMEOUT = env.integer("SANDBOX_CREATING_TIMEOUT", 300, minimum=10)
SANDBOX_CREATE_WAIT = env.integer("SANDBOX_CREATE_WAIT", 30, minimum=0, maximum=600)
SANDBOX_SWEEP_INTERVAL = env.integer("SANDBOX_SWEEP_INTERVAL", 60, minimum=60)
SANDBOX_HEALTH_INTERVAL = env.integer("SANDBOX_HEALTH_INTERVAL", 60, minimum=60)
SANDBOX_HEALTH_FAILURES = env.integer("SANDBOX_HEALTH_FAILURES", 3, minimum=1)
SANDBOX_SYNC_INTERVAL = env.integer("SANDBOX_SYNC_INTERVAL", 300, minimum=60)
SANDBOX_EXECUTION_LEASE = env.integer("SANDBOX_EXECUTION_LEASE", 60, minimum=3)
SANDBOX_SWEEP_BATCH = env.integer("SANDBOX_SWEEP_BATCH", 200, minimum=1)

# Fair share (docs/scheduling.md). Async executions are streamed by threads of the execution stream pool,
# each blocked on one executor stream; the pool looks for pending executions every SANDBOX_EXECUTION_POLL_MS
# milliseconds (with REDIS_URL set, a publish wakes it at once and the poll is only a backstop).
SANDBOX_EXECUTION_STREAMS = env.integer("SANDBOX_EXECUTION_STREAMS", 256, minimum=1, maximum=4096)
SANDBOX_EXECUTION_POLL = env.integer("SANDBOX_EXECUTION_POLL_MS", 100, minimum=10, maximum=10000) / 1000
SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER = env.integer(
    "SANDBOX_MAX_RUNNING_EXECUTIONS_PER_OWNER", 16, minimum=1
)


def _size_mib(name: str, default: str) -> int:
    """A size setting ("16Gi", "512Mi", "24G" or a number of MiB) in MiB; malformed stops start-up."""
    import re

    value = env.string(name, default).strip()
    units = {"": 1, "Mi": 1, "Gi": 2**10, "Ti": 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi|Ti|M|G|T)?", value)
    if not match or float(match.group(1)) <= 0:
        raise ImproperlyConfigured(f"{name}={value!r} is not a size; use e.g. 16Gi, 512Mi or 24G")
    return max(1, int(float(match.group(1)) * units[match.group(2) or ""]))


SANDBOX_MAX_SESSION_MEMORY_PER_OWNER = _size_mib("SANDBOX_MAX_SESSION_MEMORY_PER_OWNER", "16Gi")
# Global admission: live sessions' memory limits together stay under host memory x overcommit. Empty
# SANDBOX_HOST_MEMORY means this host's MemTotal; set it for a remote Docker or Kubernetes backend.
SANDBOX_HOST_MEMORY = _size_mib("SANDBOX_HOST_MEMORY", "") if env.string("SANDBOX_HOST_MEMORY") else 0
try:
    SANDBOX_MEMORY_OVERCOMMIT = float(env.string("SANDBOX_MEMORY_OVERCOMMIT", "1.5"))
except ValueError:
    raise ImproperlyConfigured("SANDBOX_MEMORY_OVERCOMMIT is not a number, e.g. 1.5") from None
if not 0.1 <= SANDBOX_MEMORY_OVERCOMMIT <= 100:
    raise ImproperlyConfigured(f"SANDBOX_MEMORY_OVERCOMMIT={SANDBOX_MEMORY_OVERCOMMIT} is not in 0.1..100")
# Seconds a client refused for capacity is told to wait (Retry-After).
SANDBOX_CAPACITY_RETRY_AFTER = env.integer("SANDBOX_CAPACITY_RETRY_AFTER", 30, minimum=1, maximum=3600)

# Process runtime (docs/architecture.md, "The process runtime's boundaries"). With a root control plane every
# session runs under its own host uid from this range (never uid 0, never two live sessions on one uid).
SANDBOX_PROCESS_UID_RANGE = env.string("SANDBOX_PROCESS_UID_RANGE", "200000-299999")
# Size of each process sandbox's /tmp (a tmpfs, charged to the session's memory).
SANDBOX_TMP_SIZE = _size_mib("SANDBOX_TMP_SIZE", "64Mi")
# Development only: start process sandboxes without the seccomp filter when libseccomp is missing.
SANDBOX_ALLOW_NO_SECCOMP = env.boolean("SANDBOX_ALLOW_NO_SECCOMP", False)
# Each backend reads and checks its own settings (Runtime.config_from_settings); the default backend's are
# checked now, so a malformed value (a uid range, say) stops start-up instead of failing every session.
try:
    runtime_config_from_settings(SANDBOX_RUNTIME, sys.modules[__name__])
except RuntimeFailure as _exc:
    raise ImproperlyConfigured(f"SANDBOX_RUNTIME={SANDBOX_RUNTIME}: {_exc.message}") from None

# --- metrics (docs/operations.md) ------------------------------------------------------------------------
# /metrics is served to a bearer token, to the addresses in the allow list (IPs or networks, `none` for no
# address), and to logged-in staff (sandbox_site/metrics/access.py).
SANDBOX_METRICS_TOKEN = env.string("SANDBOX_METRICS_TOKEN")
SANDBOX_METRICS_ALLOW = ",".join(env.items("SANDBOX_METRICS_ALLOW", ["127.0.0.1", "::1"]))
try:
    from sandbox_site.metrics.access import parse_allow as _parse_metrics_allow

    _parse_metrics_allow(SANDBOX_METRICS_ALLOW)
except ValueError as _exc:
    raise ImproperlyConfigured(str(_exc)) from None
# Where `manage.py serve` keeps its processes' metric values (emptied when it starts; PROMETHEUS_MULTIPROC_DIR,
# when set, wins).
SANDBOX_METRICS_DIR = Path(env.string("SANDBOX_METRICS_DIR", str(DATA_DIR / "metrics"))).resolve()

# --- logging --------------------------------------------------------------------------------------------

LOG_LEVEL = env.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
# `json`: one JSON object per line with the request, session and execution ids (sandbox_site/log_format.py),
# and one line per request instead of uvicorn's access log.
LOG_FORMAT = env.choice("LOG_FORMAT", "plain", ("plain", "json"))
if LOG_FORMAT == "json":
    MIDDLEWARE.insert(
        MIDDLEWARE.index("sandbox_site.request_id.RequestIdMiddleware") + 1,
        "sandbox_site.log_format.RequestLogMiddleware",
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "sandbox_site.request_id.RequestIdLogFilter"},
        "log_context": {"()": "sandbox_site.log_format.LogContextFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s %(message)s"},
        "json": {"()": "sandbox_site.log_format.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "log_context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
