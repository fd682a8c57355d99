"""What the benches share: percentiles, a free loopback port, a small REST API client, the product served
in a process of its own, and the latency tables."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def percentile(samples: list[float], fraction: float) -> float:
    """The sample at `fraction` (0..1) of the sorted samples, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Api:
    """Calls /api/v1 with an API key; an error answer ends the bench with its status and body."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base, key

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.base}/api/v1{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise SystemExit(f"{method} {path} answered {exc.code}: {exc.read()[:500]!r}") from None


def serve(env: dict[str, str], data_dir: str, port: int) -> subprocess.Popen:
    """`manage.py serve` on `port` in a session of its own (stop it with its process group), logging to
    `data_dir`/serve.log."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(data_dir, "serve.log"), "w"),  # noqa: SIM115
        start_new_session=True,
    )


def latency_figures(samples: dict[str, list[float]], pairs: Iterable[tuple[str, str]]) -> dict[str, float]:
    """Median and p95 of each sample set (`<name>_median_ms`, `<name>_p95_ms`), and for each (ours, raw)
    pair the ratios of the two (`<ours>_vs_<raw>_median`, `..._p95`)."""
    figures: dict[str, float] = {}
    for name, values in samples.items():
        figures[f"{name}_median_ms"] = statistics.median(values)
        figures[f"{name}_p95_ms"] = percentile(values, 0.95)
    for ours, raw in pairs:
        for stat in ("median", "p95"):
            figures[f"{ours}_vs_{raw}_{stat}"] = figures[f"{ours}_{stat}_ms"] / figures[f"{raw}_{stat}_ms"]
    return figures


def print_latency_table(
    figures: dict[str, float],
    rows: Iterable[tuple[str, str, str]],
    ratios: Iterable[tuple[str, str, str]],
    verdicts: dict[str, bool],
    width: int = 44,
) -> None:
    """The table of a latency bench: (key, label, target) rows of median/p95, (ours, raw, label) ratios,
    then `met`/`MISSED` for each target."""
    print(f"{'measurement':<{width}}{'median ms':>11}{'p95 ms':>11}   target")
    for key, label, target in rows:
        print(
            f"{label:<{width}}{figures[key + '_median_ms']:>11.1f}{figures[key + '_p95_ms']:>11.1f}   {target}"
        )
    print(f"{'ratio':<{width}}{'median':>11}{'p95':>11}")
    for ours, raw, label in ratios:
        median, p95 = figures[f"{ours}_vs_{raw}_median"], figures[f"{ours}_vs_{raw}_p95"]
        print(f"{label:<{width}}{median:>11.2f}{p95:>11.2f}")
    for target, met in verdicts.items():
        print(f"{'met' if met else 'MISSED':<7} {target}")


def print_samples(title: str, samples: dict[str, list[float]], width: int = 26) -> dict[str, float]:
    """Median, p95 and count of each named sample set under `title`; returns the medians."""
    print(title)
    print(f"{'':<{width}}{'median ms':>12}{'p95 ms':>10}{'n':>6}")
    medians = {}
    for name, values in samples.items():
        medians[name] = statistics.median(values)
        print(f"{name:<{width}}{medians[name]:>12.1f}{percentile(values, 0.95):>10.1f}{len(values):>6}")
    return medians
