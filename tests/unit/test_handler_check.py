"""A worker's start check of its ``--exec`` handler looks at what the program is told to
run: ``python process.py {path}`` needed only ``python`` to pass, so a revision without
(or with a broken) process.py started, said it was ready, passed ValidateService and failed
every request. The check loads the script (compiles or parses it) and runs none of it."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from s3q import Queue
from s3q.cli import cli
from s3q.handlercheck import check_script
from s3q.handlers import ExecHandler

PY = shlex.quote(sys.executable)

pytestmark = pytest.mark.usefixtures("isolated_cli")


@pytest.fixture(autouse=True)
def _in_app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The worker's working directory (the unit's WorkingDirectory), with a good script,
    one that runs when loaded (it must never be), and broken ones."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ok.py").write_text("import sys\nprint(open(sys.argv[1]).read())\n")
    (tmp_path / "loud.py").write_text("open('ran', 'w').write('x')\n")
    (tmp_path / "broken.py").write_text("def handle(:\n    pass\n")
    (tmp_path / "ok.sh").write_text("cat \"$1\"\n")
    (tmp_path / "broken.sh").write_text("if true; then\n  echo x\n")
    (tmp_path / "pkg").mkdir()
    return tmp_path


def check(command: str) -> str:
    return ExecHandler(command).check()


@pytest.mark.parametrize("command", [
    f"{PY} ok.py {{path}}",
    f"{PY} -u -W ignore -X dev ok.py {{path}}",
    f"{PY} loud.py {{path}}",                   # loaded, not run (see below)
    f"{PY} {{path}}",                           # the script is known per request
    f"{PY} -c 'import sys; print(sys.argv)' {{path}}",
    f"{PY} -uc 'print(1)' {{path}}",
    f"{PY} -m json.tool {{path}}",
    "sh ok.sh {path}",
    "sh -e ok.sh {path}",
    "sh -ec 'cat \"$1\"' {path}",
    "bash -c 'cat \"$0\"' {path}",
    "cat {path}",                               # not an interpreter: nothing to look into
])
def test_a_handler_whose_script_loads_passes(_in_app_dir: Path, command: str) -> None:
    check(command)
    assert not (_in_app_dir / "ran").exists(), "the check ran the script"


@pytest.mark.parametrize(("command", "message"), [
    (f"{PY} process.py {{path}}", "cannot load its script 'process.py': no such file "
                                  "(relative paths are from the working directory, {cwd})"),
    (f"{PY} -u pkg {{path}}", "cannot load its script 'pkg': not a file"),
    (f"{PY} broken.py {{path}}", "cannot load its script 'broken.py': does not compile: "
                                 "SyntaxError: "),
    (f"{PY} -W error -m no_such_module_s3q.handler {{path}}",
     "-m no_such_module_s3q.handler: cannot find it: ModuleNotFoundError: No module named "
     "'no_such_module_s3q'"),
    (f"{PY} -m json.no_such_tool_s3q {{path}}",
     "-m json.no_such_tool_s3q: cannot find it: No module named 'json.no_such_tool_s3q'"),
    ("sh broken.sh {path}", "cannot load its script 'broken.sh': does not parse: "),
    ("bash -e missing.sh {path}", "cannot load its script 'missing.sh': no such file"),
])
def test_a_handler_whose_script_cannot_load_is_refused_with_the_reason(
        _in_app_dir: Path, command: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check(command)
    text = str(info.value)
    assert text.startswith("--exec: "), text
    assert message.format(cwd=_in_app_dir) in text, text
    assert "\n" not in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_script_is_refused(_in_app_dir: Path) -> None:
    (_in_app_dir / "ok.py").chmod(0o200)
    with pytest.raises(ValueError, match=r"'ok.py': not readable by this user \(uid \d+\)"):
        check(f"{PY} ok.py {{path}}")


def test_the_worker_refuses_to_start_and_check_handler_says_why(_in_app_dir: Path) -> None:
    """At start (exit 2, one line, nothing claimed) and with --check-handler, which opens no
    queue: it does not even create a local one."""
    qdir = _in_app_dir / "q"
    Queue(str(qdir)).submit("a_request.json", b"{}")
    for extra in (["--burst"], ["--check-handler"]):
        out = CliRunner().invoke(cli, ["worker", "--exec", f"{PY} process.py {{path}}",
                                       *extra, "--queue", str(qdir)], catch_exceptions=False)
        assert out.exit_code == 2, out.output
        [line] = [ln for ln in out.stderr.splitlines() if ln.startswith("s3q: ")]
        assert line.startswith("s3q: error: --exec: ") and "'process.py': no such file" in line
    assert Queue(str(qdir)).counts() == {"wait": 1, "processing": 0, "finish": 0, "failed": 0}

    fresh = _in_app_dir / "fresh"
    for args in (["--exec", f"{PY} loud.py {{path}}"], ["--handler", "json:dumps"]):
        out = CliRunner().invoke(cli, ["worker", *args, "--check-handler", "--queue",
                                       str(fresh)], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        assert out.stdout.startswith("the handler can run: "), out.stdout
    assert not fresh.exists() and not (_in_app_dir / "ran").exists()


@pytest.mark.parametrize(("source", "why"), [
    ("def handle(req:\n    pass\n", "SyntaxError"),
    ("import os\nKEY = os.environ['S3Q_TEST_NO_SUCH_VARIABLE']\n", "KeyError"),
    ("import sys\nsys.exit('API_KEY is not set')\n", "SystemExit: API_KEY is not set"),
])
@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_handler_module_that_fails_to_import_is_refused_in_one_line(
        _in_app_dir: Path, monkeypatch: pytest.MonkeyPatch, source: str, why: str,
        pool: str) -> None:
    """Not only ImportError: a module with a syntax error, or one whose import raises
    (a variable it needs unset, its sys.exit()), is a handler that cannot load, exit 2 with
    one line (the ValidateService hook fails a deployment at once on exit 2 only; a
    traceback and exit 1 made it wait for its timeout, and the unit crash-loop)."""
    (_in_app_dir / "badmod.py").write_text(source)
    monkeypatch.syspath_prepend(str(_in_app_dir))
    monkeypatch.delitem(sys.modules, "badmod", raising=False)
    out = CliRunner().invoke(cli, ["worker", "--handler", "badmod:handle", "--pool", pool,
                                   "--check-handler", "--queue", str(_in_app_dir / "q")])
    assert out.exit_code == 2, (out.exception, out.output)
    [line] = [ln for ln in out.stderr.splitlines() if ln.startswith("s3q: ")]
    assert line.startswith("s3q: error: handler 'badmod:handle': cannot import 'badmod': "
                           f"{why}"), line


@pytest.mark.parametrize("command", [
    "php -d memory_limit=512M ok.php {path}",
    "php -c conf ok.php {path}",
    "perl -I lib ok.pl {path}",
    "ruby -I lib -C . ok.rb {path}",
    "node --loader ts-node/esm ok.js {path}",
    "node --import tsx ok.js {path}",
])
def test_an_option_of_node_perl_ruby_or_php_with_its_value_apart_is_no_script(
        _in_app_dir: Path, command: str) -> None:
    """The options of these interpreters are not all known here: one whose value is the
    next argument (``php -d memory_limit=512M``, ``perl -I lib``, ``node --loader X``) had
    that value taken for the script, and a good handler refused (no such file, not a
    file): the worker never started, ValidateService failed the deployment. An argument
    after such an option that is no file may be its value; the script is the next one."""
    for script in ("ok.php", "ok.pl", "ok.rb", "ok.js"):
        (_in_app_dir / script).write_text("")
    (_in_app_dir / "lib").mkdir()
    (_in_app_dir / "conf").mkdir()
    argv = command.split()
    check_script(argv, argv[0])
    with pytest.raises(ValueError, match=r"cannot load its script 'missing\.x': no such"):
        check_script([*argv[:-2], "missing.x", "{path}"], argv[0])


def test_a_python_zipapp_or_directory_with_a_main_is_a_script_python_runs(
        _in_app_dir: Path) -> None:
    """``python app.pyz {path}`` (a zipapp: shiv, pex, ``python -m zipapp``) and ``python
    app/ {path}`` (a directory with a ``__main__.py``) are what Python runs, as their
    ``__main__.py``: the check compiled the archive's bytes ("source code string cannot
    contain null bytes") and refused the directory ("not a file"), so a worker with a good
    handler never started. Each still needs its ``__main__.py``, which must compile."""
    import zipfile

    app = _in_app_dir / "app"
    app.mkdir()
    (app / "__main__.py").write_text("import sys\nprint(open(sys.argv[1]).read())\n")
    with zipfile.ZipFile(_in_app_dir / "app.pyz", "w") as z:
        z.write(app / "__main__.py", "__main__.py")
    for script in ("app.pyz", "app", "app/"):
        check(f"{PY} {script} {{path}}")
    assert not (_in_app_dir / "ran").exists()

    with zipfile.ZipFile(_in_app_dir / "nomain.pyz", "w") as z:
        z.writestr("other.py", "")
    (_in_app_dir / "bad").mkdir()
    (_in_app_dir / "bad" / "__main__.py").write_text("def handle(:\n")
    for script, message in (("nomain.pyz", "a zip archive without a __main__.py"),
                            ("bad", "does not compile: SyntaxError"),
                            ("pkg", "not a file, nor a directory with a __main__.py")):
        with pytest.raises(ValueError, match=f"cannot load its script '{script}': {message}"):
            check(f"{PY} {script} {{path}}")


@pytest.mark.parametrize("first_line", [b"#!/bin/sh\r\n", b"#!/usr/bin/env sh\r\n"])
def test_a_script_whose_first_line_ends_in_a_carriage_return_is_refused(
        _in_app_dir: Path, first_line: bytes) -> None:
    """A script saved with Windows line endings: the kernel takes the ``\\r`` for part of
    its ``#!`` line (it looks for ``/bin/sh\\r``, or env for ``sh\\r``), so every run
    fails: 'No such file or directory' for a file that is there, or exit 127. The check
    split the line on whitespace, found ``/bin/sh`` and let the worker start, say it was
    ready and fail every request (uncharged: the breaker then tripped; charged: exit 127)."""
    script = _in_app_dir / "process.sh"
    script.write_bytes(first_line + b"cat \"$1\"\r\n")
    script.chmod(0o755)
    with pytest.raises(ValueError, match=r"'./process.sh': its #! line ends in a carriage "
                                         r"return \(Windows line endings\)"):
        check("./process.sh {path}")


@pytest.mark.parametrize(("command", "word"), [
    (f"{PY} ok.py {{path}} && {PY} ok.py {{path}}", "&&"),
    (f"{PY} ok.py {{path}} > out.txt 2>&1", ">"),
    (f"{PY} ok.py {{path}} | gzip", "|"),
    (f"{PY} ok.py {{path}} ; echo done", ";"),
])
def test_a_command_written_for_a_shell_is_refused(_in_app_dir: Path, command: str,
                                                  word: str) -> None:
    """No shell runs an --exec command: ``python a.py {path} && python b.py {path}`` ran
    a.py with '&&', 'python', 'b.py' and the path as its arguments, and b.py never: each
    request completed with half its work done (``cd /srv && ...``, where /usr/bin/cd
    exists, as on Fedora and Amazon Linux, completed every request having run nothing).
    A shell's operator as a word of its own is refused, saying how to run a shell."""
    with pytest.raises(ValueError, match=rf"--exec: {re.escape(repr(word))} .*no shell runs "
                                         r"the command.*sh -c"):
        check(command)
    check(f"sh -c '{PY} ok.py \"$1\" > out.txt && echo done' sh {{path}}")
    check("find {path} -exec cat {} ;")  # (find's own ';': \; in a shell)


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_an_async_handler_is_refused_at_start(_in_app_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              pool: str) -> None:
    """``async def handle(req)``: s3q calls a handler and gets back a coroutine, never
    run: every request failed ('the handler returned a coroutine'), charged an attempt
    each until the breaker tripped (with max_attempts = 1, dead-lettered), from a worker
    that had started, said it was ready and passed ValidateService. Refused at start."""
    (_in_app_dir / "asyncmod.py").write_text("async def handle(req):\n    return b'x'\n")
    monkeypatch.syspath_prepend(str(_in_app_dir))
    monkeypatch.delitem(sys.modules, "asyncmod", raising=False)
    out = CliRunner().invoke(cli, ["worker", "--handler", "asyncmod:handle", "--pool", pool,
                                   "--check-handler", "--queue", str(_in_app_dir / "q")])
    assert out.exit_code == 2, (out.exception, out.output)
    [line] = [ln for ln in out.stderr.splitlines() if ln.startswith("s3q: ")]
    assert "handler 'asyncmod:handle': 'handle' is a coroutine function (async def)" in line


def test_an_executable_script_without_a_first_line_naming_its_interpreter_is_refused(
        _in_app_dir: Path) -> None:
    """A script made executable without a ``#!`` line (``echo ...`` first, or an empty
    file): a shell would run it with itself, but the worker execs it, and the kernel
    refuses (Exec format error) at every run: the check let the worker start and say it
    was ready, and every request failed to start (the breaker then tripped on them). An
    executable binary (ELF) is no script; one with a ``#!`` line passes as before."""
    script = _in_app_dir / "process.sh"
    for content in (b'cat "$1"\n', b""):
        script.write_bytes(content)
        script.chmod(0o755)
        with pytest.raises(ValueError, match=r"'./process.sh': a script without a #! line"):
            check("./process.sh {path}")
    script.write_bytes(b'#!/bin/sh\ncat "$1"\n')
    check("./process.sh {path}")
    check("true {path}")  # (an ELF binary)


def test_a_compiled_python_file_is_a_script_python_runs(_in_app_dir: Path) -> None:
    """``python app.pyc {path}``: Python runs a compiled file (by its magic number); the
    check compiled its bytes as source ('source code string cannot contain null bytes')
    and refused a good handler. One compiled by another Python (a bad magic number, which
    Python refuses at every run) is still refused."""
    import py_compile

    (_in_app_dir / "app.py").write_text("import sys\nprint(open(sys.argv[1]).read())\n")
    py_compile.compile(str(_in_app_dir / "app.py"), cfile=str(_in_app_dir / "app.pyc"))
    check(f"{PY} app.pyc {{path}}")
    compiled = (_in_app_dir / "app.pyc").read_bytes()
    (_in_app_dir / "old.pyc").write_bytes(b"\x03\xf3\r\n" + compiled[4:])  # (Python 2.7's)
    with pytest.raises(ValueError, match=r"cannot load its script 'old\.pyc': compiled by "
                                         r"another Python: a bad magic number"):
        check(f"{PY} old.pyc {{path}}")
