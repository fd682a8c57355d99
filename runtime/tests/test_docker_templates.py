"""The built-in template images as sandboxes: JavaScript handlers on nodejs-basic, pandas on python-datascience.

These run the images images/build.sh makes, through DockerRuntime, end to end: a handler goes in over the
host socket, its return value comes back on its own channel.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest

from runtime.tests.conftest import run_code
from runtime.tests.test_docker_support import DATASCIENCE_IMAGE, NODE_IMAGE, PYTHON_IMAGE, Sandboxes, require

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def node():
    """One nodejs-basic sandbox shared by the module's JavaScript tests (each execution is its own process)."""
    require(NODE_IMAGE)
    data_dir = tempfile.mkdtemp(prefix="sbx-", dir="/tmp")  # short: the socket path must fit in sun_path
    try:
        with Sandboxes(data_dir) as sandboxes:
            handle = sandboxes.make(image=NODE_IMAGE, memory_mb=512)
            yield sandboxes.runtime, handle
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def _js(node, code: str, **kwargs):
    runtime, handle = node
    return run_code(runtime, handle, code, language="javascript", **kwargs)


def test_nodejs_basic_reports_javascript_python_and_shell(node):
    runtime, handle = node
    assert runtime.executor(handle).health()["languages"] == {
        "python": True,
        "javascript": True,
        "shell": True,
    }
    out = run_code(runtime, handle, "import sys; print(sys.version_info[0])")
    assert out.stdout == "3\n"


def test_an_exports_handler_gets_the_event_and_returns_a_value(node):
    out = _js(node, "exports.handler = (event, context) => ({doubled: event.n * 2});", event={"n": 21})
    assert out.status == "completed" and out.result.return_value == {"doubled": 42}, out.result
    assert out.stdout == ""  # the value travels on its own channel, never through stdout


def test_an_async_handler_is_awaited(node):
    code = "exports.handler = async (e) => { await new Promise(r => setTimeout(r, 20)); return e.x + 1; };"
    assert _js(node, code, event={"x": 1}).result.return_value == 2


def test_a_top_level_handler_and_the_context_fields(node):
    runtime, handle = node
    code = (
        "function handler(e, context) { return {id: context.awsRequestId, fn: context.functionName,"
        " mem: context.memoryLimitInMB, left: context.getRemainingTimeInMillis()}; }"
    )
    out = _js(node, code, timeout=5)
    value = out.result.return_value
    assert value["fn"] == handle.session_id and value["mem"] == 512
    assert value["id"] == out.events[0].execution_id
    assert 3000 < value["left"] <= 5000


def test_a_script_without_handler_prints_and_a_throw_fails(node):
    out = _js(node, "console.log('hello from node'); console.error('warn');")
    assert (out.status, out.stdout, out.stderr) == ("completed", "hello from node\n", "warn\n")
    failed = _js(node, "exports.handler = async () => { throw new TypeError('async boom'); };")
    assert failed.status == "failed" and failed.result.error == "TypeError: async boom"


def test_node_is_absent_from_python_basic(data_dir):
    require(PYTHON_IMAGE)
    with Sandboxes(data_dir) as sbx:
        handle = sbx.make()
        assert sbx.runtime.executor(handle).health()["languages"]["javascript"] is False


def test_a_pandas_handler_returns_a_computed_value_on_python_datascience(data_dir):
    require(DATASCIENCE_IMAGE)
    with Sandboxes(data_dir) as sbx:
        handle = sbx.make(image=DATASCIENCE_IMAGE, memory_mb=1024)
        code = """
import numpy as np
import pandas as pd
import scipy.stats
import matplotlib.pyplot as plt

def handler(event, context):
    frame = pd.DataFrame({"city": event["cities"], "temp": event["temps"]})
    means = frame.groupby("city")["temp"].mean().round(2).to_dict()
    plt.plot(frame["temp"])
    plt.savefig("plot.png")
    return {"means": means, "std": float(np.std(frame["temp"])), "z": float(scipy.stats.zscore([1, 2, 3])[0])}
"""
        event = {"cities": ["a", "b", "a", "b"], "temps": [10.0, 20.0, 14.0, 26.0]}
        out = run_code(sbx.runtime, handle, code, event=event, timeout=120)
        assert out.status == "completed", (out.result, out.stderr)
        value = out.result.return_value
        assert value["means"] == {"a": 12.0, "b": 23.0}
        assert value["std"] == pytest.approx(6.0622, abs=1e-4) and value["z"] == pytest.approx(
            -1.2247, abs=1e-4
        )
        created = [f.path for f in out.result.files if f.change == "created"]
        assert created == ["plot.png"]  # matplotlib's cache stayed out of the workspace
