"""The one CLI contract every command of the pipeline follows, and the helper that builds it.

`make_app` returns a Typer app whose commands map errors the same way: exit 0 on
success, 1 on a pipeline error (`PipelineFailure` or an error type the app names: store
or index corrupt, network...), 2 on bad usage (a bad flag value, a missing input file
named by a flag, a bad or unknown config key: `store.config.ConfigError`), each as one
``error: ...`` line on stderr that names the flag, or the file and key. Every app has
``--version`` (the installed ``pubmed-pipeline`` distribution) and shell completion.
`flag` builds an option from a config model's field (its choices and default shown by
``--help``); `load_stage` merges pipeline.toml with the flags the user gave and answers
``--show-config`` (the merged config and where each value came from, then exit 0).
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer._click import Parameter  # Typer vendors its own click
from typer._click.core import ParameterSource
from typer._click.exceptions import ClickException
from typer._click.globals import get_current_context

from store.config import C, ConfigError, FlagValue, Resolved, StageConfig, resolve_config

EXIT_OK, EXIT_PIPELINE, EXIT_USAGE = 0, 1, 2
DISTRIBUTION = "pubmed-pipeline"
F = TypeVar("F", bound=Callable[..., Any])
P = TypeVar("P", bound=Path | None)


class PipelineFailure(Exception):
    """A pipeline error raised by a command body: exit 1 with this message."""


class UsageProblem(Exception):
    """Bad usage found by a command body (e.g. two inputs that exclude each other): exit 2."""


def version_text() -> str:
    try:
        return f"{DISTRIBUTION} {version(DISTRIBUTION)}"
    except PackageNotFoundError:
        return f"{DISTRIBUTION} (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(EXIT_OK)


def version_option() -> Any:
    """``--version``: print the installed version and exit 0 (eager, so it works without other arguments)."""
    return typer.Option(
        "--version", callback=_print_version, is_eager=True, expose_value=True, help="Print the version and exit."
    )


def show_config_option() -> Any:
    return typer.Option("--show-config", help="Print the merged config and where each value came from, then exit 0.")


def config_option(table: str) -> Any:
    return typer.Option("--config", help=f"TOML file to read [{table}] from [default: ./pipeline.toml when present].")


def flag(model: type[StageConfig], key: str, *names: str, help: str | None = None, **extra: Any) -> Any:
    """An option for config field ``key``: help from the field's description, the model's default shown.

    Choices are shown as ``<a|b>`` when the parameter is annotated with the field's ``Literal`` type.
    """
    info = model.model_fields[key]
    default = info.get_default(call_default_factory=True)
    text = help or (info.description or "").split(". ")[0].rstrip(".") + "."
    shown = "none" if default is None else str(default)
    return typer.Option(*(names or (f"--{key.replace('_', '-')}",)), help=text, show_default=shown, **extra)


def _flag_name(param: Parameter) -> str:
    opts = [o for o in param.opts if o.startswith("--")] or list(param.opts) or [str(param.name)]
    return opts[0]


def given_flags(model: type[StageConfig], renames: dict[str, str] | None = None) -> dict[str, FlagValue]:
    """Config keys the user set on this command line (or through an option's environment variable).

    A parameter counts when its name, or ``renames[name]``, is a field of ``model``.
    """
    ctx = get_current_context()
    renames = renames or {}
    found: dict[str, FlagValue] = {}
    for param in ctx.command.params:
        name = str(param.name)
        key = renames.get(name, name)
        if key not in model.model_fields or name not in ctx.params:
            continue
        source = ctx.get_parameter_source(name)
        if source is ParameterSource.COMMANDLINE:
            found[key] = FlagValue(ctx.params[name], _flag_name(param))
        elif source is ParameterSource.ENVIRONMENT:
            found[key] = FlagValue(ctx.params[name], f"env {getattr(param, 'envvar', '')}")
    return found


def load_stage(
    model: type[C],
    table: str,
    config: Path | None,
    *,
    renames: dict[str, str] | None = None,
    extra: dict[str, FlagValue] | None = None,
    show: bool = False,
    also: Sequence[Resolved[Any]] = (),
) -> Resolved[C]:
    """Table ``[table]`` of ``config`` (default ./pipeline.toml) with this command's given flags on top.

    With ``show``, print the merged config (and ``also``, e.g. the store's) with each
    value's origin, then exit 0.
    """
    flags = {**given_flags(model, renames), **(extra or {})}
    resolved = resolve_config(model, table, config, flags)
    if show:
        for other in also:
            typer.echo(other.show())
        typer.echo(resolved.show())
        raise typer.Exit(EXIT_OK)
    return resolved


def existing_file(path: P, flag_name: str) -> P:
    """``path`` when it is a readable file; a missing one is bad usage that names the flag."""
    if path is not None and not path.is_file():
        raise UsageProblem(f"{flag_name}: no such file: {path}")
    return path


def fail(message: str, code: int = EXIT_PIPELINE) -> typing.NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def guarded(func: F, pipeline_errors: Callable[[], tuple[type[BaseException], ...]] = tuple) -> F:
    """``func`` with the contract's error mapping: config and usage errors exit 2, pipeline errors 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, ClickException, typer.Abort):
            raise
        except (ConfigError, UsageProblem) as exc:
            fail(str(exc), EXIT_USAGE)
        except PipelineFailure as exc:
            fail(str(exc))
        except Exception as exc:
            if isinstance(exc, pipeline_errors()):
                fail(str(exc))
            raise

    return typing.cast(F, wrapper)


class ContractApp(typer.Typer):
    """A Typer app whose commands all follow the contract (see the module docstring)."""

    def __init__(self, pipeline_errors: Callable[[], tuple[type[BaseException], ...]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pipeline_errors = pipeline_errors

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().command(*args, **kwargs)

        def decorator(func: F) -> F:
            register(guarded(func, self.pipeline_errors))
            return func

        return decorator


def _store_errors() -> tuple[type[BaseException], ...]:
    from store.reader import StoreError

    return (StoreError,)


def make_app(
    help: str,
    pipeline_errors: Callable[[], tuple[type[BaseException], ...]] = _store_errors,
    *,
    group: bool = True,
) -> ContractApp:
    """A Typer app with the contract: ``--version``, completion, plain help, error mapping.

    ``pipeline_errors`` returns the exception types that mean a pipeline error (called only
    when a command fails, so heavy modules need not load for ``--help``). ``group=False``
    is for a single-command tool: give its command a ``version_option()`` parameter.
    """
    app = ContractApp(
        pipeline_errors,
        help=help,
        no_args_is_help=group,
        add_completion=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"max_content_width": 120},
    )
    if group:

        @app.callback()
        def _root(show_version: typing.Annotated[bool, version_option()] = False) -> None:
            pass  # only --version lives here; every command takes --help

    return app
