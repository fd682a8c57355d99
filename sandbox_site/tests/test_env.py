from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from sandbox_site.env import Env, parse_database_url

PROJECT = Path(__file__).resolve().parents[2]


def test_it_reads_typed_values():
    env = Env({"A": "true", "B": "42", "C": "docker", "D": "x, y ,z"})
    assert env.boolean("A", False) is True
    assert env.integer("B", 1) == 42
    assert env.choice("C", "process", ("process", "docker")) == "docker"
    assert env.items("D", []) == ["x", "y", "z"]


def test_it_uses_defaults_for_unset_or_empty_values():
    env = Env({"EMPTY": ""})
    assert env.boolean("EMPTY", True) is True
    assert env.integer("MISSING", 7) == 7
    assert env.string("MISSING", "dflt") == "dflt"


@pytest.mark.parametrize(
    ("environ", "call", "message"),
    [
        ({"X": "maybe"}, lambda e: e.boolean("X", False), "X='maybe' is not a boolean"),
        ({"X": "12a"}, lambda e: e.integer("X", 0), "X='12a' is not an integer"),
        ({"X": "0"}, lambda e: e.integer("X", 5, minimum=1), "X=0 is below the minimum 1"),
        (
            {"X": "podman"},
            lambda e: e.choice("X", "process", ("process", "docker")),
            "X='podman' is not one of",
        ),
        ({"X": "ftp://h"}, lambda e: e.url("X", ("redis",)), "X='ftp://h' is not a URL"),
    ],
)
def test_it_refuses_malformed_values_naming_the_variable(environ, call, message):
    with pytest.raises(ImproperlyConfigured, match=message.replace("(", r"\(")):
        call(Env(environ))


def test_it_reads_secrets_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    assert Env({"TOKEN_FILE": str(secret)}).string("TOKEN") == "s3cr3t"


def test_it_refuses_a_secret_set_twice_or_an_unreadable_file(tmp_path):
    with pytest.raises(ImproperlyConfigured, match="TOKEN and TOKEN_FILE are both set"):
        Env({"TOKEN": "a", "TOKEN_FILE": "/etc/hostname"}).string("TOKEN")
    with pytest.raises(ImproperlyConfigured, match="TOKEN_FILE="):
        Env({"TOKEN_FILE": str(tmp_path / "missing")}).string("TOKEN")


def test_it_parses_database_urls():
    mysql = parse_database_url("DATABASE_URL", "mysql://root:p%40ss@127.0.0.1:3306/sandbox")
    assert (mysql.engine, mysql.name, mysql.user, mysql.password, mysql.host, mysql.port) == (
        "mysql",
        "sandbox",
        "root",
        "p@ss",
        "127.0.0.1",
        "3306",
    )
    assert parse_database_url("DATABASE_URL", "sqlite:////var/db.sqlite3").name == "/var/db.sqlite3"
    assert parse_database_url("DATABASE_URL", "mariadb://u@db/x").engine == "mysql"


@pytest.mark.parametrize(
    "value",
    ["nonsense", "postgres://u@h/db", "mysql://127.0.0.1/", "mysql:///db", "sqlite://", "mysql://h:99x/db"],
)
def test_it_refuses_malformed_database_urls(value):
    with pytest.raises(ImproperlyConfigured, match="DATABASE_URL="):
        parse_database_url("DATABASE_URL", value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SANDBOX_RUNTIME", "podman"),
        ("DATABASE_URL", "nonsense"),
        ("SANDBOX_WORKERS", "many"),
        ("REDIS_URL", "x"),
    ],
)
def test_start_up_stops_with_the_variable_named(variable, value, tmp_path):
    environ = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    environ.update({variable: value, "SANDBOX_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": ""})
    environ.pop("DJANGO_SETTINGS_MODULE")
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=PROJECT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert f"{variable}=" in result.stderr
    assert "ImproperlyConfigured" in result.stderr


def test_the_embedded_default_is_sqlite_process_orm_and_in_memory(tmp_path):
    environ = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("DATABASE_URL", "REDIS_URL", "SANDBOX_RUNTIME", "DJANGO_SETTINGS_MODULE", "SANDBOX_S3_BUCKET")
    }
    environ["SANDBOX_DATA_DIR"] = str(tmp_path)
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='sandbox_site.settings'; django.setup();"
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'], s.SANDBOX_RUNTIME,"
        " s.Q_CLUSTER.get('orm'), s.CHANNEL_LAYERS['default']['BACKEND'], s.STORAGES['default']['BACKEND'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, env=environ, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    engine, name, runtime, orm, layer, storage = result.stdout.split()
    assert engine == "django.db.backends.sqlite3"
    assert name == str(tmp_path / "sandbox.sqlite3")
    assert (runtime, orm) == ("process", "default")
    assert layer == "channels.layers.InMemoryChannelLayer"
    assert storage == "django.core.files.storage.FileSystemStorage"
