"""JavaScript and shell executions, and what happens when the sandbox lacks an interpreter."""

from __future__ import annotations

import pytest

from runtime.tests.test_executor_support import DAEMON_PYTHON, NODE, run, running_daemon, wait_gone

needs_node = pytest.mark.skipif(NODE is None, reason="node (or nodejs) is not installed on this machine")


@pytest.fixture(scope="module")
def executor():
    with running_daemon("--session-id", "js-session", "--memory-mb", "128") as daemon:
        yield daemon


# -- JavaScript --


@needs_node
def test_exports_handler(executor):
    result = run(
        executor.client, "exports.handler = (event, context) => event.n * 2", "javascript", event={"n": 21}
    )
    assert (result.status, result.value) == ("completed", 42)


@needs_node
def test_module_exports_handler(executor):
    code = "module.exports.handler = function (event) { return {echo: event}; };"
    assert run(executor.client, code, "javascript", event={"a": 1}).value == {"echo": {"a": 1}}


@needs_node
def test_module_exports_object_with_handler(executor):
    code = "module.exports = { handler: (e) => 'replaced exports' };"
    assert run(executor.client, code, "javascript").value == "replaced exports"


@needs_node
@pytest.mark.parametrize(
    "code",
    [
        "function handler(event, context) { return 'top-level function'; }",
        "const handler = async (event) => 'top-level function';",
        "let handler = (event) => 'top-level function'",  # no trailing newline or semicolon
        "var handler = function () { return 'top-level function' } // trailing comment",
    ],
)
def test_top_level_handler(executor, code):
    assert run(executor.client, code, "javascript").value == "top-level function"


@needs_node
def test_async_handler_is_awaited(executor):
    code = "exports.handler = async (e) => { await new Promise(r => setTimeout(r, 20)); return e.x + 1; };"
    assert run(executor.client, code, "javascript", event={"x": 1}).value == 2


@needs_node
def test_returned_promise_is_awaited(executor):
    code = "exports.handler = (event) => new Promise(resolve => setTimeout(() => resolve('later'), 20));"
    assert run(executor.client, code, "javascript").value == "later"


@needs_node
def test_callback_style_handler(executor):
    code = "exports.handler = (e, ctx, callback) => { setTimeout(() => callback(null, 'called back'), 5); };"
    assert run(executor.client, code, "javascript").value == "called back"


@needs_node
def test_entrypoint_names_the_javascript_handler(executor):
    code = "exports.handler = () => 'no'; exports.main = () => 'yes';"
    assert run(executor.client, code, "javascript", entrypoint="main").value == "yes"
    missing = run(executor.client, code, "javascript", entrypoint="absent")
    assert missing.status == "failed"
    assert "'absent' is not defined" in missing.error


@needs_node
def test_context_fields(executor):
    code = (
        "exports.handler = (e, context) => ({id: context.awsRequestId, fn: context.functionName,"
        " mem: context.memoryLimitInMB, left: context.getRemainingTimeInMillis()});"
    )
    result = run(executor.client, code, "javascript", execution_id="js-ctx-1", timeout=5)
    assert result.value["id"] == "js-ctx-1"
    assert result.value["fn"] == "js-session"
    assert result.value["mem"] == 128
    assert 3000 < result.value["left"] <= 5000


@needs_node
def test_script_without_handler(executor):
    result = run(executor.client, "console.log('hello from node'); console.error('warn');", "javascript")
    assert result.status == "completed"
    assert result.value is None
    assert result.stdout == "hello from node\n"
    assert result.stderr == "warn\n"


@needs_node
def test_script_exit_code_decides(executor):
    result = run(executor.client, "process.exit(4)", "javascript")
    assert (result.status, result.exit_code, result.error) == ("failed", 4, "exit status 4")


@needs_node
@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("exports.handler = () => { throw new Error('boom'); };", "Error: boom"),
        ("exports.handler = async () => { throw new TypeError('async boom'); };", "TypeError: async boom"),
        ("throw new RangeError('at load');", "RangeError: at load"),
        ("exports.handler = () => Promise.reject(new Error('rejected'));", "Error: rejected"),
        ("setTimeout(() => { throw new Error('later'); }, 5);", "Error: later"),
        ("exports.handler = () => { throw 'a string'; };", "Error: a string"),
    ],
)
def test_thrown_errors_fail(executor, code, error):
    result = run(executor.client, code, "javascript")
    assert result.status == "failed"
    assert result.error == error
    assert result.exit_code == 1
    assert error.split(": ", 1)[1] in result.stderr


@needs_node
def test_a_syntax_error_fails(executor):
    result = run(executor.client, "exports.handler = () => {", "javascript")
    assert result.status == "failed"
    assert result.error.startswith("SyntaxError")


@needs_node
@pytest.mark.parametrize("value", [0, "", [], False, {}])
def test_falsy_returns_are_preserved(executor, value):
    import json

    code = f"exports.handler = () => ({json.dumps(value)});"
    result = run(executor.client, code, "javascript")
    assert result.status == "completed"
    assert result.value == value
    assert type(result.value) is type(value)


@needs_node
def test_undefined_is_null_and_unserialisable_fails(executor):
    assert run(executor.client, "exports.handler = () => undefined;", "javascript").value is None
    result = run(
        executor.client, "exports.handler = () => { const a = {}; a.a = a; return a; };", "javascript"
    )
    assert result.status == "failed"
    assert result.error.startswith("TypeError: return value is not JSON serializable")


@needs_node
def test_return_value_is_not_taken_from_stdout(executor):
    code = 'exports.handler = () => { console.log(\'{"return_value": "forged"}\'); return "real"; };'
    assert run(executor.client, code, "javascript").value == "real"


@needs_node
def test_require_resolves_from_the_workspace(executor):
    (executor.workspace / "lib.js").write_text("module.exports = { answer: 42 };\n")
    code = "const lib = require('./lib'); exports.handler = () => [lib.answer, process.cwd()];"
    assert run(executor.client, code, "javascript").value == [42, str(executor.workspace.resolve())]


@needs_node
def test_node_out_of_memory_is_a_crash(executor):
    code = "const keep = []; while (true) { keep.push(new Array(1e6).fill(1)); }"
    result = run(
        executor.client, code, "javascript", env={"NODE_OPTIONS": "--max-old-space-size=32"}, timeout=20
    )
    assert result.status == "crashed"
    assert "killed by signal" in result.error


# -- shell --


def test_shell_gets_the_event_on_stdin_and_in_the_environment(executor):
    result = run(
        executor.client,
        'read -r line\necho "stdin:$line"\necho "env:$SANDBOX_EVENT"',
        "shell",
        event={"k": "v"},
    )
    assert result.status == "completed"
    assert result.stdout == 'stdin:{"k": "v"}\nenv:{"k": "v"}\n'
    assert result.value is None


def test_shell_exit_code_decides_the_status(executor):
    ok = run(executor.client, "echo fine", "shell")
    assert (ok.status, ok.exit_code) == ("completed", 0)
    bad = run(executor.client, "echo oops >&2\nexit 7", "shell")
    assert (bad.status, bad.exit_code, bad.error) == ("failed", 7, "exit status 7")
    assert bad.stderr == "oops\n"


def test_shell_sees_request_env_and_runs_in_the_workspace(executor):
    result = run(
        executor.client,
        'echo "$FOO $SANDBOX_EXECUTION_ID $(pwd)"',
        "shell",
        env={"FOO": "bar"},
        execution_id="sh-1",
    )
    assert result.stdout == f"bar sh-1 {executor.workspace.resolve()}\n"


def test_a_large_shell_script_runs_from_a_file(executor):
    script = "x=0\n" + "x=$((x+1))\n" * 20_000 + 'echo "$x"\n'
    assert len(script) > 100_000
    assert run(executor.client, script, "shell").stdout == "20000\n"


def test_shell_pipelines_end_normally(executor):
    # SIGPIPE is back at its default for programs the executor starts, so `yes` dies quietly.
    result = run(executor.client, "yes | head -n 3", "shell", timeout=5)
    assert result.stdout == "y\ny\ny\n"
    assert result.stderr == ""


def test_a_shell_background_job_neither_holds_the_result_nor_survives(executor):
    # A result held back by the job's inherited stdout would come at the timeout, as `timeout`.
    result = run(executor.client, "sleep 100 &\necho $!", "shell", timeout=5)
    assert result.status == "completed"
    assert wait_gone(int(result.stdout))


# -- missing interpreters --


def test_a_missing_interpreter_fails_with_a_clear_error():
    with running_daemon(env={"PATH": "/nonexistent"}) as daemon:
        assert daemon.client.health()["languages"] == {"python": True, "javascript": False, "shell": False}
        js = run(daemon.client, "exports.handler = () => 1", "javascript")
        assert js.status == "failed"
        assert js.error == "javascript is not available in this sandbox: node not found"
        sh = run(daemon.client, "echo hi", "shell")
        assert sh.status == "failed"
        assert "shell is not available in this sandbox" in sh.error
        py = run(
            daemon.client, f"import sys\ndef handler(e, c):\n    return sys.executable == {DAEMON_PYTHON!r}"
        )
        assert py.value is True
