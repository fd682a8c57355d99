"""Lint, render, validate, install and uninstall the charts in deploy/helm without a helm binary.

Helm itself does the work: PyPI's helm-python-sdk binds Helm's Go SDK (v4) through a C library, so `lint` is
`helm lint --strict`, `render` is `helm template`, `install` is `helm install --wait`. `validate` checks the
rendered manifests offline against the Kubernetes OpenAPI schemas with kubernetes-validate (strict: unknown
fields are errors), once per Kubernetes version asked for; versions older than the installed
kubernetes-validate knows come from an older release of it (`--old-validator DIR`, a `pip install --target`).

    python deploy/helm/chart_tool.py lint CHART[=VALUES[,VALUES...]] ...
    python deploy/helm/chart_tool.py validate CHART[=VALUES[,VALUES...]] ... --kube 1.20.0 --kube 1.37.0
    python deploy/helm/chart_tool.py render CHART [-f VALUES ...] [-n NAMESPACE]
    python deploy/helm/chart_tool.py install CHART RELEASE -n NAMESPACE [-f VALUES ...] [--timeout 300]
    python deploy/helm/chart_tool.py uninstall RELEASE -n NAMESPACE
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml


def merged_values(files: list[str]) -> dict[str, Any]:
    """The values files merged in order, maps deeply and everything else replaced (as `helm -f a -f b`)."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    values: dict[str, Any] = {}
    for name in files:
        values = merge(values, yaml.safe_load(Path(name).read_text()) or {})
    return values


def targets(specs: list[str]) -> list[tuple[str, list[str]]]:
    """`CHART` or `CHART=VALUES[,VALUES...]` -> (chart, values files)."""
    out = []
    for spec in specs:
        chart, _, files = spec.partition("=")
        out.append((chart, [f for f in files.split(",") if f]))
    return out


def lint(specs: list[str]) -> int:
    import helm_python as helm

    failed = 0
    for chart, files in targets(specs):
        report = helm.lint(chart, merged_values(files) or None, strict=True)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        for message in report["messages"]:
            level = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(message["severity"], "?")
            print(f"[{level}] {message['path']}: {message['error']}")
        for error in report["errors"]:
            print(f"[ERROR] {chart}: {error}")
        print(f"lint --strict {chart} {' '.join(files)}: {'FAILED' if problems else 'ok'}")
        failed += bool(problems)
    return 1 if failed else 0


def render(chart: str, files: list[str], release: str, namespace: str) -> str:
    """The chart's manifests as one multi-document YAML stream (hooks included, NOTES.txt left out)."""
    import helm_python as helm

    rendered = helm.Chart.load(chart).render(
        merged_values(files) or None, name=release, namespace=namespace, is_install=True
    )
    documents = [
        text.strip()
        for path, text in sorted(rendered.items())
        if path.endswith((".yaml", ".yml")) and text.strip()
    ]
    return "\n---\n".join(documents) + "\n"


def validate(specs: list[str], versions: list[str], old_validator: str | None) -> int:
    """Every target rendered into a file of its own, then one kubernetes-validate run per version over all."""
    import kubernetes_validate

    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        paths: list[str] = []
        for index, (chart, files) in enumerate(targets(specs)):
            manifest = render(chart, files, "validate", "validate")
            path = os.path.join(tmp, f"{index}-{Path(chart).name}.yaml")
            Path(path).write_text(manifest)
            paths.append(path)
            kinds = [f"{d['kind']}/{d['metadata']['name']}" for d in yaml.safe_load_all(manifest) if d]
            print(f"{path}: {chart} {' '.join(files)}: {len(kinds)} objects ({', '.join(kinds)})")
        for version in versions:
            env = dict(os.environ)
            if version not in kubernetes_validate.utils.all_versions():
                if not old_validator:
                    print(f"kubernetes-validate {kubernetes_validate.__version__} has no {version} schemas")
                    return 1
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [old_validator, env.get("PYTHONPATH")]))
            result = subprocess.run(
                [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version, *paths],
                env=env,
                capture_output=True,
                text=True,
            )
            output = (result.stdout + result.stderr).strip()
            if output:
                print(output)
            # An apiVersion the version does not serve is only a warning ("Couldn't find schema"): a failure here.
            verdict = "ok" if result.returncode == 0 and not output else "FAILED"
            failed += verdict == "FAILED"
            print(f"kubernetes-validate --strict -k {version}, {len(paths)} renders: {verdict}")
    return 1 if failed else 0


def install(chart: str, release: str, namespace: str, files: list[str], timeout: int, wait: bool) -> int:
    import helm_python as helm

    config = helm.Config(namespace=namespace)
    try:
        result = config.install(
            chart,
            release,
            merged_values(files),
            namespace=namespace,
            create_namespace=True,
            wait="watcher" if wait else None,
            timeout=timeout,
        )
    except helm.HelmError as exc:
        print(f"install {release}: {exc}")
        return 1
    finally:
        config.close()
    info = result.get("info") or {}
    print(f"installed {release} ({chart}) in {namespace}: {info.get('status', result.get('status', '?'))}")
    return 0


def uninstall(release: str, namespace: str, timeout: int) -> int:
    import helm_python as helm

    config = helm.Config(namespace=namespace)
    try:
        config.uninstall(release, wait="watcher", timeout=timeout, ignore_not_found=True)
    except helm.HelmError as exc:
        print(f"uninstall {release}: {exc}")
        return 1
    finally:
        config.close()
    print(f"uninstalled {release} from {namespace}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("lint", "validate"):
        command = sub.add_parser(name)
        command.add_argument("targets", nargs="+", help="CHART or CHART=VALUES[,VALUES...]")
        if name == "validate":
            command.add_argument(
                "--kube", action="append", default=[], help="Kubernetes version (repeatable)"
            )
            command.add_argument("--old-validator", help="a kubernetes-validate installed with pip --target")
    for name in ("render", "install"):
        command = sub.add_parser(name)
        command.add_argument("chart")
        if name == "install":
            command.add_argument("release")
            command.add_argument("--timeout", type=int, default=300, help="seconds")
            command.add_argument(
                "--no-wait", action="store_true", help="do not wait for the objects to be ready"
            )
        command.add_argument("-f", "--values", action="append", default=[], help="values file (repeatable)")
        command.add_argument("-n", "--namespace", default="default")
    remove = sub.add_parser("uninstall")
    remove.add_argument("release")
    remove.add_argument("-n", "--namespace", default="default")
    remove.add_argument("--timeout", type=int, default=300, help="seconds")
    args = parser.parse_args(argv)

    if args.command == "lint":
        return lint(args.targets)
    if args.command == "validate":
        return validate(args.targets, args.kube or ["1.20.0"], args.old_validator)
    if args.command == "render":
        sys.stdout.write(render(args.chart, args.values, "release", args.namespace))
        return 0
    if args.command == "install":
        return install(args.chart, args.release, args.namespace, args.values, args.timeout, not args.no_wait)
    return uninstall(args.release, args.namespace, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
