"""`yoco`: the Typer application, global options and the one place errors become exit codes.

Importing this module must stay cheap (shell completion runs `yoco` on every TAB):
no torch, numpy or matplotlib at import time; commands import what they need.
"""
from __future__ import annotations

import importlib
import os
import sys
import typing
from pathlib import Path
from typing import Annotated

import typer

from .._version import __version__
from ..errors import EXIT_BUG, EXIT_INTERRUPTED, YocoError, resource_error
from . import output
from .common import complete_threads, state

# One module per command or group; each exposes `register(app)`.
COMMAND_MODULES = [
    "cmd_cache",     # cache dir|ls|info|verify|gc|rm
    "cmd_fetch",     # fetch NAME... | --list | --offline
    "cmd_sets",      # import PATH | show REF | export REF
    "cmd_condense",  # condense DATASET --ipc N --method idc|dm|random|herding
    "cmd_score",     # score DYNAMICS|SET | --from-file data-score-*.pickle
    "cmd_prune",     # prune [SET] --from N --to N... --metric M | --key KEY
    "cmd_dynamics",  # dynamics SET [--seeds N] | --from-file td-ipc10.pickle
    "cmd_eval",      # eval SET... [--repeats N] [--model M] [--full]
    "cmd_pipeline",  # pipeline [DATASET] --to 1 2 5 --seeds 3 --repeats 1 --plot FILE
    "cmd_report",    # report [--table main|rules|balance|easyhard] [--format ...] [--plot FILE]
    "cmd_publish",   # publish SET hf:OWNER/NAME | --folder DIR
    "cmd_env",       # env: versions, devices, threads, stores, environment variables, extras
]


def _click_exceptions():
    """click's exceptions module, wherever this Typer keeps click: Typer 0.26+ vendors it as
    `typer._click`, older releases depend on `click`. Found through TyperGroup's base class,
    so no private name is spelled out."""
    click_base = typer.core.TyperGroup.__mro__[1]  # click's Group or Command class
    return importlib.import_module(click_base.__module__.rsplit(".", 1)[0] + ".exceptions")


click_errors = _click_exceptions()

# The value column of --help in click's words: nothing for a flag, N / X / PATH / TEXT for a value
# ("..." when repeatable), an option's own metavar first. Typer 0.29 prints the Python annotation
# instead (`<bool>` on every flag, `<list[Path]>`); older typers use click's own names already.
_METAVARS = {int: "N", float: "X", str: "TEXT", Path: "PATH", bool: "BOOL"}


def _display_type_rich(self, ctx) -> str | None:
    if self.is_flag or self.count:
        return None
    if self.metavar is not None:
        return self.metavar
    desc = self.type_descriptor
    annotation = typing.get_args(desc.annotation)[0] if desc.is_list else desc.annotation
    name = _METAVARS.get(annotation, "VALUE")
    return f"{name}..." if desc.is_list or self.multiple else name


def _argument_type_rich(self, ctx) -> str | None:
    return None  # an argument's name column already says what it is (SET, TARGET, ...)


def _argument_name(self) -> str:
    """SET, TARGET...: the metavar, else the name in capitals (typer 0.29 writes `{path}`)."""
    name = self.metavar or self.name.upper()
    return name + ("..." if self.nargs != 1 and not name.endswith("...") else "")


def _argument_usage(self) -> str:
    return _argument_name(self) if self.required else f"[{_argument_name(self)}]"


if hasattr(getattr(typer.core, "TyperOption", None), "display_type_rich"):
    # deliberate patch of typer's classes (the metavar column above), hence the method assignments
    typer.core.TyperOption.display_type_rich = _display_type_rich  # type: ignore[method-assign]  # see above
    typer.core.TyperArgument.display_type_rich = _argument_type_rich  # type: ignore[method-assign]  # see above
    typer.core.TyperArgument._rich_display_name = _argument_name  # type: ignore[method-assign]  # see above
    typer.core.TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]  # see above


def _usage_error(e) -> typer.Exit:
    """Click's usage errors as one line (its default is a boxed panel), exit code kept (2).

    `yoco` or `yoco cache` alone is a request for help, not an error: the help is shown, exit 0.
    """
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None else "yoco"
    if type(e).__name__ == "NoArgsIsHelpError":
        if _json_wanted(ctx):
            return _fail(f"`{where}` needs a command", f"see `{where} --help`", e.exit_code)
        text = e.format_message()  # Rich help is printed while formatting; plain help is returned
        if text.strip():
            typer.echo(text)
        return typer.Exit(0)
    return _fail(e.format_message(), f"see `{where} --help`", e.exit_code, ctx)


def _json_wanted(ctx) -> bool:
    """--json given anywhere on the command line (before `--`), even when parsing failed before it took effect."""
    root = ctx.find_root() if ctx is not None else None
    return output.get().json_mode or bool(root is not None and root.meta.get("yoco.json"))


def _fail(message: str, hint: str | None, code: int, ctx=None) -> typer.Exit:
    """One line on stderr; under --json also {"error", "hint", "exit_code"} on stdout."""
    out = output.get()
    if _json_wanted(ctx) and not out.json_mode:
        out = output.configure(json_mode=True, quiet=out.quiet, debug=out.debug)
    out.failure(message, hint, code)
    return typer.Exit(code)


_refs_before: dict | None = None  # the names stored when the command started


def _say_moved_names() -> None:
    """A stored name that now points at another artifact is said so, once per command, whichever
    stage moved it (`SET@dynamics` after `yoco dynamics SET --epochs 10`, say)."""
    global _refs_before
    before, _refs_before = _refs_before, None
    if not before:
        return
    after = _stored_names(state.home)
    if after is None:
        return
    for name, (stage, key) in sorted(after.items()):
        old = before.get(name)
        if old is not None and old != (stage, key):
            output.get().info(f"name {name} now points to {stage} {key[:12]} (was {old[0]} {old[1][:12]})")


class YocoGroup(typer.core.TyperGroup):
    """Runs every command inside one error boundary (also under CliRunner in tests)."""

    def parse_args(self, ctx, args):
        if ctx.parent is None:  # a fresh sink before anything can fail (the global options come later)
            head = args[:args.index("--")] if "--" in args else args
            ctx.meta["yoco.json"] = "--json" in head
            output.configure(json_mode="--json" in head, quiet="--quiet" in head or "-q" in head,
                             debug="--debug" in head or bool(os.environ.get("YOCO_DEBUG")))
        try:
            return super().parse_args(ctx, args)
        except click_errors.UsageError as e:
            raise _usage_error(e) from None

    def invoke(self, ctx):
        try:
            try:
                return super().invoke(ctx)
            finally:
                _say_moved_names()
        except YocoError as e:
            if output.get().debug:
                raise
            raise _fail(e.message, e.hint, e.exit_code, ctx) from None
        except KeyboardInterrupt as e:  # errors.Interrupted says what the interrupted work kept
            raise _fail("interrupted", getattr(e, "hint", None) or "the cache is consistent; run the command "
                        "again to resume", EXIT_INTERRUPTED, ctx) from None
        except click_errors.UsageError as e:  # a subcommand's bad or missing argument
            raise _usage_error(e) from None
        except (typer.Exit, typer.Abort, click_errors.ClickException):
            raise
        except Exception as e:
            if output.get().debug:
                raise
            # a full disk, a name too long, a read-only folder: the user's to fix, in one line (exit 2)
            err = resource_error(e) if isinstance(e, OSError) else None
            if err is not None:
                raise _fail(err.message, err.hint, err.exit_code, ctx) from None
            # anything else is a bug: say so in one line unless --debug
            raise _fail(f"internal error: {type(e).__name__}: {e}", "run with --debug for the traceback",
                        EXIT_BUG, ctx) from None


app = typer.Typer(
    name="yoco",
    cls=YocoGroup,
    help="You Only Condense Once: resize a condensed dataset to any smaller IPC without condensing again.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"yoco {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    home: Annotated[Path | None, typer.Option("--home", help="Cache folder (overrides YOCO_HOME).",
                                                 show_default=False)] = None,
    shared: Annotated[list[Path] | None, typer.Option(
        "--shared", help="A read-only store under the cache: lookups fall through to it, results stay in the "
                         "cache (repeatable; overrides YOCO_SHARED). See docs/cache.md.",
        show_default=False)] = None,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No messages or progress bars.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Start runs estimated at over a day without asking (asked on a terminal, refused "
                            "elsewhere).")] = False,
    verbose: Annotated[int, typer.Option(
        "--verbose", "-v", count=True, help="Say what is read, reused, computed and written, with timings (-v); "
                                            "with keys and parameters too (-vv). Silent by default.")] = 0,
    threads: Annotated[str | None, typer.Option(
        "--threads", metavar="N|auto", show_default=False, autocompletion=complete_threads,
        help="CPU threads for torch (default: YOCO_THREADS, else OMP_NUM_THREADS, else auto: one thread for "
             "small models on small images, the free cores for larger work). Results are byte-identical for "
             "the same device and thread count.")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Global options apply to every command."""
    state.home = home
    state.shared = list(shared) if shared else None  # None: YOCO_SHARED
    state.store = None
    global _refs_before
    _refs_before = _stored_names(home)
    output.configure(json_mode=json_, quiet=quiet, debug=debug or bool(os.environ.get("YOCO_DEBUG")))
    _log_to_stderr(verbose)
    output.assume_yes = yes
    # Process-wide settings are the CLI's to make (the library leaves its host process alone).
    # No torch here: the thread policy only reads the setting (and sets OpenMP's wait policy).
    from ..nn.device import configure_threads, tune_malloc

    tune_malloc()
    configure_threads(threads)


def _log_to_stderr(verbose: int) -> None:
    """-v: INFO records of yoco's loggers on stderr, -vv: DEBUG too; nothing without -v (the library
    only logs; a script that wants the same configures the `yoco_cli` logger itself)."""
    import logging

    logger = logging.getLogger("yoco_cli")
    for h in [h for h in logger.handlers if getattr(h, "yoco_cli", False)]:
        logger.removeHandler(h)  # one handler even when the app runs several times in one process (tests)
    if verbose <= 0:
        logger.setLevel(logging.NOTSET)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.yoco_cli = True  # type: ignore[attr-defined]  # marks the handler this function owns
    handler.setFormatter(logging.Formatter("%(relativeCreated)8.0f ms  %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


def _stored_names(home) -> dict | None:
    from ..store import Store

    try:
        return Store(home, shared=state.shared).refs()
    except (OSError, YocoError):
        return None


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__package__}.{_name}").register(app)


def main() -> None:
    try:
        app(prog_name="yoco")
    except KeyboardInterrupt:  # raised before a command started (e.g. while parsing)
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
