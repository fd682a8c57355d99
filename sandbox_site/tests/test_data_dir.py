"""The data dir is 0700 and the SQLite database (with its -wal/-shm) and secret key 0600, new or existing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from django.conf import settings


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def manage(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SECRET_KEY")}
    env.update({"SANDBOX_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "sandbox_site.settings"})
    return subprocess.run(
        [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


def test_a_new_install_creates_a_private_data_dir_and_database(tmp_path):
    data_dir = tmp_path / "data"
    old = os.umask(0o022)  # the usual umask, under which SQLite would create its file 0644
    try:
        manage(data_dir, "migrate", "--noinput", "-v0")
    finally:
        os.umask(old)
    assert mode(data_dir) == 0o700
    database = data_dir / "sandbox.sqlite3"
    assert database.stat().st_size > 0
    assert mode(database) == 0o600
    assert mode(data_dir / "secret_key") == 0o600
    for suffix in ("-wal", "-shm"):
        extra = Path(f"{database}{suffix}")
        if extra.exists():
            assert mode(extra) == 0o600


def test_an_existing_install_is_fixed_at_start_with_a_log_line(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    database = data_dir / "sandbox.sqlite3"
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), data_dir / "secret_key"):
        path.write_text("x" * 60 if path.name == "secret_key" else "")
        path.chmod(0o644)
    result = manage(data_dir, "check")
    assert mode(data_dir) == 0o700
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), data_dir / "secret_key"):
        assert mode(path) == 0o600, path
    assert "restricted" in result.stderr and "0644 -> 0600" in result.stderr, result.stderr
