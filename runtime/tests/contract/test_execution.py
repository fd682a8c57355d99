"""Execution semantics on every backend: handlers and scripts in each language, return values (falsy ones
too), the statuses an execution can end with, cancel, and the environment it sees."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from runtime.tests.conftest import Outcome, run_code
from runtime.tests.contract.conftest import still_serves
from sandbox_site.testing import wait_until

SPEC_ENV = {"GREETING": "hello world", "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture(scope="module")
def polyglot(backend):
    """One sandbox that runs every language (the node template on backends with images), with spec env."""
    handle = backend.runtime.create(backend.spec(image="node", env=SPEC_ENV))
    yield handle
    backend.runtime.destroy(handle)


def test_a_python_handler_gets_the_event_and_its_return_value_comes_back(backend, polyglot):
    out = run_code(
        backend.runtime,
        polyglot,
        "def handler(event, context):\n    print('seen', event['x'])\n    return {'double': event['x'] * 2}\n",
        event={"x": 21},
    )
    assert out.status == "completed", out.result
    assert out.result.return_value == {"double": 42} and out.stdout == "seen 21\n"
    assert out.result.exit_code == 0


def test_python_code_without_a_handler_runs_as_a_script(backend, polyglot):
    out = run_code(backend.runtime, polyglot, "import sys\nprint('out')\nprint('err', file=sys.stderr)\n")
    assert out.status == "completed", out.result
    assert (out.stdout, out.stderr, out.result.return_value) == ("out\n", "err\n", None)


def test_a_javascript_handler_is_awaited_and_a_script_prints(backend, polyglot):
    handler = run_code(
        backend.runtime,
        polyglot,
        "exports.handler = async (event, context) => ({ double: event.x * 2 });",
        language="javascript",
        event={"x": 21},
    )
    assert handler.status == "completed" and handler.result.return_value == {"double": 42}, handler.result
    script = run_code(backend.runtime, polyglot, "console.log('from node', 1 + 1)", language="javascript")
    assert script.status == "completed" and script.stdout == "from node 2\n", script.result


def test_a_shell_script_gets_the_event_and_its_exit_code_decides(backend, polyglot):
    ok = run_code(backend.runtime, polyglot, 'echo "got $(cat)"', language="shell", event={"x": 1})
    assert ok.status == "completed" and json.loads(ok.stdout.removeprefix("got ")) == {"x": 1}, ok.result
    failed = run_code(backend.runtime, polyglot, "echo partial; exit 3", language="shell")
    assert failed.status == "failed" and failed.result.exit_code == 3 and failed.stdout == "partial\n"


PYTHON_FALSY: tuple[object, ...] = (0, "", [], False, {}, 0.0, None)
JAVASCRIPT_FALSY: tuple[tuple[str, object], ...] = (
    ("0", 0),
    ('""', ""),
    ("[]", []),
    ("false", False),
    ("({})", {}),
)


@pytest.mark.parametrize(
    "language,code,value",
    [
        *[("python", f"def handler(event, context):\n    return {v!r}\n", v) for v in PYTHON_FALSY],
        *[("javascript", f"exports.handler = () => {js};", v) for js, v in JAVASCRIPT_FALSY],
    ],
)
def test_falsy_return_values_come_back_as_themselves(backend, polyglot, language, code, value):
    out = run_code(backend.runtime, polyglot, code, language=language)
    assert out.status == "completed", out.result
    assert out.result.return_value == value and type(out.result.return_value) is type(value)


@pytest.mark.parametrize(
    "language,code,words",
    [
        ("python", "def handler(event, context):\n    raise ValueError('boom')\n", ["ValueError", "boom"]),
        ("python", "def handler(event, context):\n    return object()\n", ["serial"]),
        ("python", "import sys\nsys.exit(4)\n", ["4"]),
        ("javascript", "exports.handler = () => { throw new Error('boom'); };", ["boom"]),
    ],
)
def test_an_error_fails_the_execution_and_says_why(backend, polyglot, language, code, words):
    out = run_code(backend.runtime, polyglot, code, language=language)
    assert out.status == "failed", out.result
    assert all(word in (out.result.error or "") for word in words), out.result.error or ""


def test_an_execution_killed_by_a_signal_is_crashed(backend, polyglot):
    out = run_code(backend.runtime, polyglot, "import os, signal\nprint('before')\nos.kill(os.getpid(), 9)\n")
    assert out.status == "crashed" and "SIGKILL" in (out.result.error or ""), out.result
    still_serves(backend, polyglot)


def test_a_running_execution_can_be_cancelled(backend, polyglot):
    execution_id = uuid.uuid4().hex
    outcome: list[Outcome] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            run_code(
                backend.runtime,
                polyglot,
                "import time\ntime.sleep(60)\n",
                execution_id=execution_id,
                timeout=60,
            )
        )
    )
    runner.start()
    client = backend.runtime.executor(polyglot)
    wait_until(lambda: client.health()["active_executions"], what="the execution to be running")
    assert client.cancel(execution_id) is True
    runner.join(timeout=30)
    assert outcome and outcome[0].status == "cancelled", outcome
    assert client.cancel(execution_id) is False  # it is over: nothing left to cancel
    still_serves(backend, polyglot)


def test_request_env_reaches_every_language_and_does_not_leak_into_the_next_execution(backend, polyglot):
    env = {"COLOUR": "blue"}
    python = run_code(backend.runtime, polyglot, "import os; print(os.environ['COLOUR'])", env=env)
    shell = run_code(backend.runtime, polyglot, 'echo "$COLOUR"', language="shell", env=env)
    node = run_code(
        backend.runtime, polyglot, "console.log(process.env.COLOUR)", language="javascript", env=env
    )
    assert python.stdout == shell.stdout == node.stdout == "blue\n", (
        python.result,
        shell.result,
        node.result,
    )
    after = run_code(
        backend.runtime, polyglot, "import os; os.environ['LEAK'] = '1'; print(os.environ.get('COLOUR'))"
    )
    assert after.stdout == "None\n"
    assert run_code(backend.runtime, polyglot, "import os; print(os.environ.get('LEAK'))").stdout == "None\n"


def test_spec_env_reaches_every_language_and_home_and_cwd_are_the_workspace(backend, polyglot):
    handle = polyglot
    out = run_code(
        backend.runtime,
        handle,
        "\n".join(
            [
                "import os, pathlib",
                "print(os.environ['GREETING'])",
                "print(os.environ['HOME'], os.getcwd(), os.environ.get('PYTHONDONTWRITEBYTECODE'))",
                "pathlib.Path('made-inside.txt').write_text('from the sandbox')",
            ]
        ),
    )
    assert out.status == "completed", out.result
    assert out.stdout == "hello world\n/workspace /workspace 1\n"
    # Written by sandboxed code, readable by the control plane.
    assert backend.read_workspace_file(backend.runtime, handle, "made-inside.txt") == b"from the sandbox"
    shell = run_code(backend.runtime, handle, 'echo "$GREETING from $(pwd)"', language="shell")
    assert shell.stdout == "hello world from /workspace\n"
    node = run_code(
        backend.runtime, handle, "console.log(process.env.GREETING, process.cwd())", language="javascript"
    )
    assert node.status == "completed" and node.stdout == "hello world /workspace\n", node.result
