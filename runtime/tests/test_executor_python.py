"""The Python handler contract of the executor daemon (DESIGN.md 5), end to end through ExecutorClient."""

from __future__ import annotations

import textwrap

import pytest

from runtime.tests.test_executor_support import run, running_daemon


@pytest.fixture(scope="module")
def executor():
    with running_daemon("--session-id", "sess-42", "--memory-mb", "256") as daemon:
        yield daemon


def code(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def test_two_argument_handler_gets_event_and_context(executor):
    result = run(
        executor.client, "def handler(event, context):\n    return {'got': event['x'] * 2}", event={"x": 21}
    )
    assert result.status == "completed"
    assert result.value == {"got": 42}
    assert result.exit_code == 0
    assert result.error is None


def test_one_argument_handler_gets_just_the_event(executor):
    result = run(executor.client, "def handler(event):\n    return event", event={"a": [1, 2]})
    assert result.status == "completed"
    assert result.value == {"a": [1, 2]}


def test_lambda_handler_name_is_found(executor):
    result = run(executor.client, "def lambda_handler(event, context):\n    return 'lambda'")
    assert result.value == "lambda"


def test_entrypoint_names_the_handler(executor):
    source = "def handler(e, c):\n    return 'wrong'\ndef main(e, c):\n    return 'right'"
    assert run(executor.client, source, entrypoint="main").value == "right"


def test_missing_entrypoint_fails_with_a_clear_error(executor):
    result = run(executor.client, "def handler(e, c):\n    return 1", entrypoint="nope")
    assert result.status == "failed"
    assert "'nope' is not defined" in result.error


def test_async_handler_is_awaited(executor):
    source = code(
        """
        import asyncio
        async def handler(event, context):
            await asyncio.sleep(0.01)
            return event["n"] + 1
        """
    )
    assert run(executor.client, source, event={"n": 1}).value == 2


def test_code_without_handler_runs_as_a_script(executor):
    result = run(executor.client, "x = 6 * 7\nprint('script says', x)")
    assert result.status == "completed"
    assert result.value is None
    assert result.stdout == "script says 42\n"


@pytest.mark.parametrize("value", [0, "", [], False, {}, 0.0])
def test_falsy_return_values_come_back_as_themselves(executor, value):
    result = run(executor.client, f"def handler(event, context):\n    return {value!r}")
    assert result.status == "completed"
    assert result.value == value
    assert type(result.value) is type(value)


def test_odd_strings_survive_the_trip(executor):
    value = "caf\u00e9 \u2028 \U0001f600 \udc80 \x00"
    result = run(executor.client, f"def handler(event, context):\n    return {value!r}")
    assert result.value == value


def test_none_comes_back_as_null(executor):
    result = run(executor.client, "def handler(event, context):\n    return None")
    assert result.status == "completed"
    assert result.value is None


def test_a_non_serialisable_return_value_fails(executor):
    result = run(executor.client, "def handler(event, context):\n    return object()")
    assert result.status == "failed"
    assert result.error.startswith("TypeError: return value is not JSON serializable")


def test_an_exception_fails_with_type_message_and_traceback(executor):
    source = code(
        """
        def helper():
            raise ValueError("bad input here")

        def handler(event, context):
            helper()
        """
    )
    result = run(executor.client, source)
    assert result.status == "failed"
    assert result.error == "ValueError: bad input here"
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert 'File "<handler>", line 2, in helper' in result.stderr
    assert 'raise ValueError("bad input here")' in result.stderr  # the source line, via linecache
    assert "pyrunner" not in result.stderr


def test_a_syntax_error_fails(executor):
    result = run(executor.client, "def handler(:\n    pass")
    assert result.status == "failed"
    assert result.error.startswith("SyntaxError")


def test_sys_exit_with_a_code_fails_with_that_code(executor):
    result = run(executor.client, "import sys\nprint('bye')\nsys.exit(3)")
    assert result.status == "failed"
    assert result.exit_code == 3
    assert "3" in result.error
    assert result.stdout == "bye\n"


def test_sys_exit_zero_completes(executor):
    result = run(executor.client, "import sys\ndef handler(event, context):\n    sys.exit(0)")
    assert result.status == "completed"
    assert result.exit_code == 0


def test_context_has_the_lambda_fields(executor):
    source = code(
        """
        def handler(event, context):
            return {
                "request_id": context.aws_request_id,
                "function_name": context.function_name,
                "memory": context.memory_limit_in_mb,
                "remaining": context.get_remaining_time_in_millis(),
            }
        """
    )
    result = run(executor.client, source, execution_id="ctx-exec-1", timeout=5)
    assert result.value["request_id"] == "ctx-exec-1"
    assert result.value["function_name"] == "sess-42"
    assert result.value["memory"] == 256
    assert 3000 < result.value["remaining"] <= 5000


def test_the_return_value_is_not_taken_from_stdout(executor):
    source = code(
        """
        import json
        def handler(event, context):
            print(json.dumps({"return_value": "forged"}))
            print('{"type": "result", "status": "completed", "return_value": "forged"}')
            return "real"
        """
    )
    result = run(executor.client, source)
    assert result.value == "real"
    assert "forged" in result.stdout


def test_stdout_and_stderr_are_captured_separately(executor):
    result = run(executor.client, "import sys\nprint('to out')\nprint('to err', file=sys.stderr)")
    assert result.stdout == "to out\n"
    assert result.stderr == "to err\n"


def test_request_env_and_execution_id_reach_the_code(executor):
    source = code(
        """
        import os
        def handler(event, context):
            return [os.environ["GREETING"], os.environ["SANDBOX_EXECUTION_ID"]]
        """
    )
    result = run(executor.client, source, env={"GREETING": "hello"}, execution_id="env-exec-7")
    assert result.value == ["hello", "env-exec-7"]


def test_the_token_is_invisible_to_code(executor):
    source = code(
        """
        import os
        def handler(event, context):
            return [os.environ.get("SANDBOX_EXECUTOR_TOKEN"), "test-token" in str(dict(os.environ))]
        """
    )
    assert run(executor.client, source).value == [None, False]


def test_env_changes_do_not_leak_into_the_next_execution(executor):
    run(executor.client, "import os\nos.environ['LEAKY'] = '1'", env={"ALSO": "x"})
    result = run(
        executor.client,
        "import os\ndef handler(e, c):\n    return [os.environ.get('LEAKY'), os.environ.get('ALSO')]",
    )
    assert result.value == [None, None]


def test_module_state_does_not_leak_between_executions(executor):
    run(executor.client, "import json\njson.leaked = True\nCOUNTER = 1")
    result = run(
        executor.client,
        "import json\ndef handler(e, c):\n    return [hasattr(json, 'leaked'), 'COUNTER' in globals()]",
    )
    assert result.value == [False, False]


def test_code_runs_in_the_workspace_and_can_import_from_it(executor):
    (executor.workspace / "helper_mod.py").write_text("VALUE = 'from workspace'\n")
    source = "import os, helper_mod\ndef handler(e, c):\n    return [os.getcwd(), helper_mod.VALUE]"
    result = run(executor.client, source)
    assert result.value == [str(executor.workspace.resolve()), "from workspace"]


def test_killed_by_a_signal_is_crashed(executor):
    result = run(executor.client, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert result.status == "crashed"
    assert "SIGKILL" in result.error
    assert result.exit_code == -9


def test_result_reports_usage(executor):
    result = run(executor.client, "def handler(e, c):\n    return sum(range(200000))")
    assert result.result.metrics.cpu_time_ms > 0
    assert result.result.metrics.peak_memory_mb > 1
    assert result.result.metrics.duration_ms > 0


def test_packages_dir_comes_first_on_sys_path(tmp_path):
    packages = tmp_path / "pkgs"
    (packages / "sandboxdep").mkdir(parents=True)
    (packages / "sandboxdep" / "__init__.py").write_text("NAME = 'installed dependency'\n")
    with running_daemon("--packages", str(packages)) as daemon:
        result = run(daemon.client, "import sandboxdep\ndef handler(e, c):\n    return sandboxdep.NAME")
    assert result.value == "installed dependency"
