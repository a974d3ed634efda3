"""The published e2b-code-interpreter SDK, unmodified, against Airlock's e2b-compatible API.

Run by e2e/tests/e2b_sdk.rs with the environment described in test_python_sdk.py; the
`code-interpreter-v1` template (the SDK's default) exists in user A's namespace.
"""

import pytest
from e2b_code_interpreter import Sandbox


@pytest.fixture(scope="module")
def sbx():
    s = Sandbox.create(timeout=600)
    yield s
    s.kill()


def test_state_survives_between_calls(sbx):
    first = sbx.run_code("x = 41")
    assert first.error is None
    assert first.text is None
    second = sbx.run_code("x + 1")
    assert second.text == "42"
    assert second.execution_count == first.execution_count + 1


def test_output_is_streamed_and_collected(sbx):
    seen = []
    e = sbx.run_code("import os, sys\nprint('out')\nprint('err', file=sys.stderr)\nos.system('echo child')",
                     on_stdout=lambda m: seen.append(m.line))
    assert e.logs.stdout == ["out\n", "child\n"]
    assert e.logs.stderr == ["err\n"]
    assert seen == ["out\n", "child\n"]
    assert sbx.run_code("import os; os.environ['V']", envs={"V": "per call"}).text == "'per call'"
    assert sbx.run_code("import os; os.environ.get('V')").text is None


def test_errors_come_back_with_their_traceback(sbx):
    e = sbx.run_code("def f():\n    return 1/0\nf()")
    assert e.error.name == "ZeroDivisionError"
    assert e.error.value == "division by zero"
    assert "Traceback" in e.error.traceback and "return 1/0" in e.error.traceback
    assert sbx.run_code("1 + 1").text == "2"  # the context goes on


def test_contexts(sbx):
    ctx = sbx.create_code_context(cwd="/tmp/ctx")
    assert ctx.language == "python" and ctx.cwd == "/tmp/ctx"
    assert sbx.run_code("y = 5", context=ctx).error is None
    assert sbx.run_code("import os; (y, os.getcwd())", context=ctx).text == "(5, '/tmp/ctx')"
    assert sbx.run_code("y").error.name == "NameError"  # the default context is another one
    assert ctx.id in [c.id for c in sbx.list_code_contexts()]
    sbx.restart_code_context(ctx)
    assert sbx.run_code("y", context=ctx).error.name == "NameError"
    sbx.remove_code_context(ctx)
    assert ctx.id not in [c.id for c in sbx.list_code_contexts()]
    with pytest.raises(Exception) as e:
        sbx.run_code("1", language="r")
    assert "only python" in str(e.value)
