"""Exit codes, and the group class that turns every expected error into one line on stderr
(``s3q: error: <message>``) and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from s3q.errors import ConfigError
from s3q.logs import teardown_logging
from s3q.store import InvalidKey, StoreError

EXIT_UNHEALTHY = 1
#: An operator command over many requests (requeue, recover, purge) did not do all it
#: listed, and lost nothing: each request it left alone (changed since it was listed) or
#: could not finish is named on stderr; its ``--json`` says ``"complete": false``. The
#: code of "not all is well" (status --check), never that of a store error (3).
EXIT_INCOMPLETE = EXIT_UNHEALTHY
EXIT_USAGE = 2
EXIT_STORE = 3


class Failure(Exception):
    """Stop the command: ``s3q: error: <message>`` on stderr, exit ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class S3qGroup(click.Group):
    """Turns every expected error into one line on stderr and an exit code."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        try:
            code = self._run(args, prog_name or "s3q", complete_var, **extra)
        finally:
            teardown_logging()
        if not standalone_mode:
            return code
        sys.exit(code)

    def _run(self, args: Sequence[str] | None, prog_name: str, complete_var: str | None,
             **extra: Any) -> int:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as e:  # bare `s3q`: the help text, as it is
            click.echo(e.format_message(), err=True)
            return EXIT_USAGE
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            return _error(e.format_message() + hint, EXIT_USAGE)
        except click.ClickException as e:
            return _error(e.format_message(), e.exit_code)
        except click.Abort:
            return _error("aborted", 1)
        except Failure as e:
            return _error(str(e), e.code)
        except (ConfigError, InvalidKey) as e:
            return _error(str(e), EXIT_USAGE)
        except StoreError as e:
            return _error(str(e), EXIT_STORE)
        return rv if isinstance(rv, int) else 0


class _NeverRaised(click.UsageError):
    pass


#: click >= 8.2 raises this for a group run without a command (older ones print the help).
_NO_ARGS_IS_HELP: type[click.UsageError] = getattr(click.exceptions, "NoArgsIsHelpError",
                                                   _NeverRaised)


def _error(message: str, code: int) -> int:
    click.echo(f"s3q: error: {' '.join(message.split())}", err=True)
    return code
