"""Can a handler program load what it runs? :func:`check_script` looks past the program of
an ``--exec`` command to what an interpreter is told to run: ``python process.py {path}``
needs ``process.py`` as much as ``python``, and a worker that checked only ``python``
started, said it was ready, and failed every request.

For an interpreter (Python, a POSIX shell, node, perl, ruby, php) given a script, the
script must be a readable file (relative paths from the working directory, where the
program runs); Python compiles it (a zipapp must hold a ``__main__.py``; a directory is
its ``__main__.py``) and a shell parses it (``sh -n``), with the handler's
own interpreter, without running it; ``python -m MODULE`` must find the module. Commands
that are not an interpreter, inline code (``python -c``, ``sh -c``) and a script named by
``{path}`` or ``{name}`` (known per request) are not looked into.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import subprocess
import zipfile

__all__ = ["check_callable", "check_script", "check_shebang", "check_words"]

log = logging.getLogger("s3q.handlers")

#: Seconds a syntax check may take; a slower one is skipped with a warning (a worker does
#: not refuse to start because its host is slow).
CHECK_TIMEOUT = 60.0

_PYTHON = re.compile(r"(python|pypy)[0-9.]*")
_SHELL = re.compile(r"(ba|da|z|k|mk)?sh")
_OTHER = re.compile(r"node(js)?|perl[0-9.]*|ruby[0-9.]*|php[0-9.]*")
#: Per kind: options whose value is the next argument; options after which no script file
#: follows (inline code, a module, standard input), alone or ending a cluster of flags
#: (``python -uc``, ``sh -ec``). An option not known here is taken for a flag: at worst a
#: script goes unchecked, never is a good one refused. So for the "other" kinds, whose
#: options are not all known, an argument after such an option (without ``=``) that is no
#: file may be its value (``php -d memory_limit=1G``, ``perl -I lib``, ``node --loader X``):
#: the script is the next argument.
_OPTIONS = {
    "python": ({"-W", "-X", "--check-hash-based-pycs"},
               re.compile(r"-[bBdEhiIOqsSuvVxPR]*[cm]|-")),
    "shell": ({"-o", "+o", "-O", "+O", "--rcfile", "--init-file"},
              re.compile(r"-[a-zA-Z]*[cs][a-zA-Z]*|-")),
    "other": ({"--require"}, re.compile(r"-[a-zA-Z]*[eEpr]|--eval|--print|-")),
}
_COMPILE = """\
import sys
path = sys.argv[1]
try:
    with open(path, "rb") as f:
        compile(f.read(), path, "exec", dont_inherit=True)
except SyntaxError as e:
    sys.exit("%s: %s (line %s)" % (type(e).__name__, e.msg, e.lineno))
except Exception as e:
    sys.exit("%s: %s" % (type(e).__name__, e))
"""
_MAGIC = """\
import importlib.util, sys
with open(sys.argv[1], "rb") as f:
    if f.read(4) != importlib.util.MAGIC_NUMBER:
        sys.exit("a bad magic number: compile it with this interpreter")
"""
_FIND_MODULE = """\
import importlib.util, sys
try:
    found = importlib.util.find_spec(sys.argv[1]) is not None
except Exception as e:
    sys.exit("%s: %s" % (type(e).__name__, e))
if not found:
    sys.exit("No module named %r" % sys.argv[1])
"""


def check_callable(spec: str, attr: str, target: object) -> None:
    """Raise ValueError if ``target`` (``spec``'s ``attr``) cannot be a handler: not callable,
    or an ``async def`` (called, it returns a coroutine that nothing runs: every request
    would fail)."""
    if not callable(target):
        raise ValueError(f"handler {spec!r}: {attr!r} is not callable")
    if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target):
        raise ValueError(f"handler {spec!r}: {attr!r} is a coroutine function (async def), "
                         f"which s3q does not await: give it a plain function, e.g. def "
                         f"handle(req): return asyncio.run({attr}(req))")


#: Words that only a shell gives a meaning to: in an --exec command (no shell runs it) they
#: are the program's arguments, and what follows them is not run.
_SHELL_WORDS = {"&&", "||", "|", ";", "&", ">", ">>", "<", "2>", "2>>", "2>&1", ">&2", "&>"}


def check_words(argv: list[str]) -> None:
    """Raise ValueError if a word of the command is a shell's operator (``&&``, ``>``, …)."""
    find = {"-exec", "-execdir", "-ok", "-okdir"} & set(argv)  # (find's own ';' ends those)
    word = next((w for w in argv[1:] if w in _SHELL_WORDS and not (find and w == ";")), None)
    if word is not None:
        raise ValueError(f"--exec: {word!r} is an argument of {argv[0]!r} here: no shell runs "
                         f"the command, so what it joins or redirects does not happen; run "
                         f"a shell for it: --exec \"sh -c 'CMD \\\"$1\\\" {word} ...' sh "
                         f"{{path}}\"")


def check_shebang(program: str, path: str) -> None:
    """Raise ValueError if the file at ``path`` (run as ``program``) is a script that exec
    cannot run: one without a ``#!`` line (text, no ELF binary: Exec format error at every
    run), or one whose ``#!`` line ends in a carriage return (saved with Windows line
    endings): the kernel takes it for part of the interpreter's name (``/bin/sh\\r``: 'no
    such file', of a file that is there) or of its argument (``env python3\\r``: exit 127)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return
    line = head.split(b"\n", 1)[0]
    if not head.startswith((b"#!", b"\x7fELF")) and b"\0" not in head:
        raise ValueError(f"--exec: cannot run {program!r}: a script without a #! line, for "
                         f"which the kernel runs no interpreter (Exec format error): begin "
                         f"it with one (#!/bin/sh), or name its interpreter in the command")
    if line.startswith(b"#!") and line.endswith(b"\r"):
        raise ValueError(f"--exec: cannot run {program!r}: its #! line ends in a carriage "
                         f"return (Windows line endings), which the kernel takes for part "
                         f"of {line[2:-1].decode('utf-8', 'replace').strip()!r}: convert the "
                         f"file (dos2unix {path})")


def check_script(argv: list[str], program: str) -> None:
    """``argv`` runs ``program`` (its resolved path): raise ValueError saying why the script
    or module an interpreter is given cannot be loaded, or why a shell's word is in it
    (:func:`check_words`); return quietly for anything else."""
    check_words(argv)
    kind = _kind(os.path.basename(argv[0]))
    if kind is None:
        return
    with_value, inline = _OPTIONS[kind]
    args = iter(argv[1:])
    after_option = False  # (of an "other" kind: the argument may be the option's value)
    for arg in args:
        if inline.fullmatch(arg):
            if kind == "python" and arg.endswith("m"):
                _check_module(argv, program, next(args, ""))
            return
        if arg in with_value:
            next(args, None)
        elif arg.startswith(("-", "+")):
            after_option = kind == "other" and "=" not in arg
        elif after_option and not os.path.isfile(arg) and not _per_request(arg):
            after_option = False  # perhaps the option's value: the script comes next
        else:
            _check_file(argv, program, kind, arg)
            return


def _per_request(arg: str) -> bool:
    return "{path}" in arg or "{name}" in arg


def _kind(name: str) -> str | None:
    if _PYTHON.fullmatch(name):
        return "python"
    if _SHELL.fullmatch(name):
        return "shell"
    return "other" if _OTHER.fullmatch(name) else None


def _check_file(argv: list[str], program: str, kind: str, script: str) -> None:
    if _per_request(script):
        return  # known only per request
    where = f"--exec: {argv[0]} cannot load its script {script!r}"
    if not os.path.exists(script):
        raise ValueError(f"{where}: no such file (relative paths are from the working "
                         f"directory, {os.getcwd()})")
    main = os.path.join(script, "__main__.py")
    if kind == "python" and os.path.isdir(script) and os.path.isfile(main):
        script = main  # python runs a directory (a zipapp's source) as its __main__.py
    if not os.path.isfile(script):
        raise ValueError(f"{where}: not a file" + (", nor a directory with a __main__.py"
                                                  if kind == "python" else ""))
    if not os.access(script, os.R_OK):
        raise ValueError(f"{where}: not readable by this user (uid {os.getuid()})")
    if kind == "python" and zipfile.is_zipfile(script):  # a zipapp (shiv, pex): run as such
        try:
            with zipfile.ZipFile(script) as z:
                names = set(z.namelist())
        except (OSError, zipfile.BadZipFile) as e:
            raise ValueError(f"{where}: a broken zip archive: {e}") from None
        if not {"__main__.py", "__main__.pyc"} & names:
            raise ValueError(f"{where}: a zip archive without a __main__.py")
    elif kind == "python" and script.endswith(".pyc"):  # run as compiled, by its magic
        _run_check(where, [program, "-c", _MAGIC, script], "compiled by another Python")
    elif kind == "python":
        _run_check(where, [program, "-c", _COMPILE, script], "does not compile")
    elif kind == "shell":
        _run_check(where, [program, "-n", script], "does not parse")


def _check_module(argv: list[str], program: str, module: str) -> None:
    if not module or "{path}" in module or "{name}" in module:
        return
    _run_check(f"--exec: {argv[0]} -m {module}", [program, "-c", _FIND_MODULE, module],
               "cannot find it")


def _run_check(where: str, command: list[str], what: str) -> None:
    """Run ``command`` (a check that runs none of the handler's code); raise ValueError
    with the last line of its stderr when it fails."""
    try:
        proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=CHECK_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        log.warning("%s: the check took more than %gs; not checked", where, CHECK_TIMEOUT,
                    extra={"event": "handler_check_slow"})
        return
    except OSError as e:
        raise ValueError(f"{where}: cannot run {command[0]!r}: {e.strerror or e}") from None
    if proc.returncode != 0:
        lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ValueError(f"{where}: {what}: {lines[-1] if lines else f'exit {proc.returncode}'}")
