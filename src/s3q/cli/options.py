"""Every non-secret setting as a flag of every command, and :class:`App`, which loads the
config from them and opens the queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import click

from s3q.cli.errors import Failure
from s3q.config import SETTINGS, Setting, load_config, resolve_secrets
from s3q.layout import State
from s3q.logs import setup_logging
from s3q.queue import Queue
from s3q.store import StoreError

F = TypeVar("F", bound=Callable[..., Any])

_FLAGS = "s3q.flags"
_CONFIG_PATH = "s3q.config_path"
_SHORT = {"concurrency": "-c"}
#: The settings that are flags (secrets never are: argv is visible to every user).
FLAG_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.flag is not None)

STATES = click.Choice([s.value for s in State])  # use with metavar="STATE"


class Duration(click.ParamType):  # type: ignore[type-arg]
    """Seconds, or a number with a unit: ``90s``, ``30m``, ``12h``, ``7d``."""

    name = "duration"
    UNITS: ClassVar[dict[str, int]] = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip().lower()
        unit = self.UNITS.get(text[-1:], 0)
        try:
            number = float(text[:-1] if unit else text)
        except ValueError:
            number = -1.0
        if not 0 <= number < float("inf"):
            self.fail(f"{value!r} is not a duration: give seconds, or a number with s, m, h "
                      "or d (e.g. 7d)", param, ctx)
        return number * (unit or 1)


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> None:
    if value is not None and param.name is not None:
        if param.name == "config_path":
            ctx.meta[_CONFIG_PATH] = value
        else:
            ctx.meta.setdefault(_FLAGS, {})[param.name] = value


def _metavar(s: Setting) -> str:
    if s.choices:
        return "[" + "|".join(s.choices) + "]"
    return {float: "SECONDS", int: "N"}.get(s.type, s.name.upper())


def _setting_option(s: Setting) -> Callable[[F], F]:
    assert s.flag is not None
    help_ = f"{s.help} [env {s.env_var}]"
    common: dict[str, Any] = {"default": None, "expose_value": False, "callback": _remember,
                              "help": help_}
    if s.type is bool:
        return click.option(f"{s.flag}/--no-{s.flag[2:]}", s.name, **common)
    # Values stay text: load_config parses and checks them, naming the flag in its errors.
    decls = [s.flag, *([_SHORT[s.name]] if s.name in _SHORT else [])]
    return click.option(*decls, s.name, metavar=_metavar(s), **common)


def setting_options(func: F) -> F:
    """Add ``--config`` and a flag for every non-secret setting; read them with :class:`App`."""
    for s in reversed(FLAG_SETTINGS):
        func = _setting_option(s)(func)
    return click.option("--config", "config_path", metavar="PATH", expose_value=False,
                        callback=_remember, help="Config file (default: ./s3q.toml, "
                        "/etc/s3q/s3q.toml) [env S3Q_CONFIG]")(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


class App:
    """What a command needs: the config (from the flags given) and the queue."""

    def __init__(self, *, quiet: bool = True) -> None:
        self.ctx = click.get_current_context()
        flags: dict[str, object] = dict(self.ctx.meta.get(_FLAGS, {}))
        self.config, self.sources = load_config(flags=flags,
                                                config_path=self.ctx.meta.get(_CONFIG_PATH))
        level = self.config.log_level
        if quiet and self.sources.get("log_level") == "default":
            level = "warning"  # one-shot commands: no info line per request touched
        setup_logging(level, self.config.log_json)

    def open_queue(self) -> Queue:
        """The queue (secrets resolved), closed when the command ends."""
        cfg = resolve_secrets(self.config)
        try:
            queue = Queue(cfg.queue, cfg.queue_config(), s3=cfg.s3_options())
        except StoreError:
            raise
        except ValueError as e:  # a bad URL or endpoint
            raise Failure(f"queue: {e}") from None
        except Exception as e:  # e.g. botocore's ProfileNotFound: a configuration problem
            raise Failure(f"queue: cannot open {cfg.queue}: {type(e).__name__}: {e}") from None
        self.ctx.call_on_close(queue.close)
        return queue
