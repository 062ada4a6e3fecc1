"""Every non-secret setting as a flag of every command (and, before the command, of ``s3q``
itself), the help layout (the command's own options, then the settings, then examples),
and :class:`App`, which loads the config from the flags and opens the queue."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from s3q.backends import open_store
from s3q.cli.errors import EXIT_STORE, Failure
from s3q.config import describe_source, load_config, resolve_secrets
from s3q.durations import DURATION_HELP, parse_duration
from s3q.layout import State
from s3q.logs import setup_logging
from s3q.queue import Queue
from s3q.settings import SETTINGS, Setting
from s3q.store import Store, StoreError

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("s3q.cli")  # not __name__: the logger name is part of the logs

_FLAGS = "s3q.flags"
_CONFIG_PATH = "s3q.config_path"
_SHORT = {"concurrency": "-c"}
#: The settings that are flags (secrets never are: argv is visible to every user).
FLAG_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.flag is not None)
#: Settings every command's help shows in full (the others are listed by name only).
COMMON = ("queue", "profile")
#: Shown by ``s3q --help`` as global options (every setting is accepted there, though).
GLOBAL = ("queue", "profile", "log_level", "log_json", "endpoint_url", "region")

STATES = click.Choice([s.value for s in State])  # use with metavar="STATE"


class Duration(click.ParamType):  # type: ignore[type-arg]
    """Seconds, or a number with a unit: ``90s``, ``30m``, ``12h``, ``7d`` (the parser of
    every duration setting)."""

    name = "duration"

    def __init__(self, minimum: float | None = None) -> None:
        self.minimum = minimum

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError:
            self.fail(f"{value!r} is not a duration: give {DURATION_HELP}", param, ctx)
        if self.minimum is not None and seconds < self.minimum:
            self.fail(f"{value!r} is shorter than {self.minimum:g}s", param, ctx)
        return seconds


class SettingOption(click.Option):
    """A setting as a flag; ``shown``: listed with its help (else by name only)."""

    def __init__(self, *args: Any, setting: Setting | None = None, shown: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.setting = setting
        self.shown = shown


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> None:
    """Flags go to ``ctx.meta``, which the group and its command share: a flag given
    after the command overrides the same flag given before it."""
    if value is not None and param.name is not None:
        if param.name == "config_path":
            ctx.meta[_CONFIG_PATH] = value
        else:
            ctx.meta.setdefault(_FLAGS, {})[param.name] = value


def _metavar(s: Setting) -> str:
    if s.choices:
        return "WORD"
    if s.duration:
        return "DURATION"
    return "N" if s.type is int else s.name.upper()


def _short_help(s: Setting) -> str:
    """The first clause of a setting's help (the whole of it is in docs/CONFIG.md)."""
    text = s.help.split("; ")[0].split(" (")[0].rstrip(".")
    return text + (" (" + "|".join(s.choices) + ")" if s.choices and s.type is not bool
                   else "") + "."


def _setting_option(s: Setting, *, shown: bool, hidden: bool = False,
                    short: bool = True) -> Callable[[F], F]:
    assert s.flag is not None
    common: dict[str, Any] = {"cls": SettingOption, "setting": s, "shown": shown,
                              "default": None, "expose_value": False, "callback": _remember,
                              "help": _short_help(s), "hidden": hidden}
    if s.type is bool:
        return click.option(f"{s.flag}/--no-{s.flag[2:]}", s.name, **common)
    # Values stay text: load_config parses and checks them, naming the flag in its errors.
    decls = [s.flag, *([_SHORT[s.name]] if short and s.name in _SHORT else [])]
    return click.option(*decls, s.name, metavar=_metavar(s), **common)


def _config_option(func: F, *, hidden: bool = False) -> F:
    return click.option("--config", "config_path", metavar="PATH", expose_value=False,
                        cls=SettingOption, callback=_remember, hidden=hidden,
                        help="Config file (default: ./s3q.toml, /etc/s3q/s3q.toml; "
                        "S3Q_CONFIG).")(func)


def setting_options(*shown: str) -> Callable[[F], F]:
    """Add ``--config`` and a flag for every non-secret setting (read them with
    :class:`App`); the help describes the ``shown`` ones (and queue, profile) and names the
    rest."""
    def decorate(func: F) -> F:
        for s in reversed(FLAG_SETTINGS):
            func = _setting_option(s, shown=s.name in shown or s.name in COMMON)(func)
        return _config_option(func)
    return decorate


def global_options(func: F) -> F:
    """Every setting before the command too (``s3q --config x.toml status``), as aws and
    celery users type them; the help shows the usual ones."""
    for s in reversed(FLAG_SETTINGS):
        func = _setting_option(s, shown=True, hidden=s.name not in GLOBAL, short=False)(func)
    return _config_option(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (with a \"schema\" key; times in ISO 8601 UTC).")(func)


def yes_option(func: F) -> F:
    return click.option("--yes", "-y", is_flag=True,
                        help="Do not ask for a confirmation.")(func)


def dry_run_option(func: F) -> F:
    return click.option("--dry-run", is_flag=True, help="Only show what would be done.")(func)


# ------------------------------------------------------------------------ help layout

class S3qCommand(click.Command):
    """Help: the command's own options, then the settings (the relevant ones in full, the
    others by name), then examples."""

    def __init__(self, *args: Any, examples: Sequence[str] = (), **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", {}).setdefault("max_content_width", 100)
        super().__init__(*args, **kwargs)
        self.examples = tuple(examples)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        format_option_groups(self, ctx, formatter, "Settings")

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        format_examples(self.examples, formatter)
        super().format_epilog(ctx, formatter)


def format_option_groups(command: click.Command, ctx: click.Context,
                         formatter: click.HelpFormatter, settings_title: str) -> None:
    own, shown, named = [], [], []
    for param in command.get_params(ctx):
        if not isinstance(param, click.Option) or param.hidden:
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        if not isinstance(param, SettingOption):
            own.append(record)
        elif param.shown:
            shown.append(record)
        else:
            named.append(param.opts[0])
    if own:
        with formatter.section("Options"):
            formatter.write_dl(own)
    if shown or named:
        with formatter.section(f"{settings_title} (also S3Q_* variables and s3q.toml keys; "
                               "'s3q config show' lists them)"):
            formatter.write_dl(shown)
            if named:  # whole flags per line (textwrap would cut them at their dashes)
                text = textwrap.fill("Also: " + " ".join(named) + " (docs/CONFIG.md)",
                                     width=max(40, formatter.width - formatter.current_indent),
                                     break_on_hyphens=False, break_long_words=False)
                formatter.write(textwrap.indent(text, " " * formatter.current_indent) + "\n")


def format_examples(examples: Sequence[str], formatter: click.HelpFormatter) -> None:
    if examples:
        with formatter.section("Examples"):
            for example in examples:
                formatter.write(f"{'':>{formatter.current_indent}}{example}\n")


# ------------------------------------------------------------------------ the app

class App:
    """What a command needs: the config (from the flags given) and the queue."""

    def __init__(self, *, quiet: bool = True) -> None:
        self.ctx = click.get_current_context()
        flags: dict[str, object] = dict(self.ctx.meta.get(_FLAGS, {}))
        self.config, self.sources = load_config(flags=flags,
                                                config_path=self.ctx.meta.get(_CONFIG_PATH))
        # one-shot commands: the library's info line per request touched is left out
        setup_logging(self.config.log_level, self.config.log_json, quiet_library=quiet)

    @property
    def queue_source(self) -> str:
        return describe_source("queue", self.sources)

    def open_queue(self, *, create: bool = False,
                   wrap: Callable[[Store], Store] | None = None) -> Queue:
        """The queue (secrets resolved), closed when the command ends. Only commands that
        put requests in (submit, worker) ``create`` a local queue directory; the others fail
        on one that does not exist. The first log line says where the queue came from.
        ``wrap``: a store around the store (the dashboard's request meter). The config keeps
        its secrets resolved: what else the command builds (the worker's SQS client) reads
        none from SSM again."""
        cfg = self.config = resolve_secrets(self.config)
        origin = self.queue_source
        try:
            store = open_store(cfg.queue, cfg.s3_options(), create=create)
        except StoreError as e:
            raise Failure(f"{e} (queue from {origin})", EXIT_STORE) from None
        except ValueError as e:  # a bad URL or endpoint
            raise Failure(f"queue: {e} ({origin})") from None
        except Exception as e:  # e.g. botocore's ProfileNotFound: a configuration problem
            raise Failure(f"queue: cannot open {cfg.queue}: {type(e).__name__}: {e}") from None
        queue = Queue(wrap(store) if wrap is not None else store, cfg.queue_config())
        self.ctx.call_on_close(queue.close)
        default = self.sources.get("queue", "default") == "default"
        parent, _, last = store.url.rstrip("/").rpartition("/")
        folder = last in [s.value for s in State] and not parent.endswith("/")
        log.log(logging.WARNING if default or folder else logging.INFO, "queue %s (%s)%s",
                store.url, origin, f": it ends in {last!r}, a folder of a queue: its requests "
                f"are read from {store.url}/{last}/; if requests arrive in {store.url}/, the "
                f"queue is {parent}" if folder else "", extra={
                    "event": "queue", "queue": store.url, "source": origin,
                    "profile": cfg.profile})
        return queue
