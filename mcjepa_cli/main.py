"""The ``mcjepa`` command line: one Typer app, one subcommand per module in ``commands/``.

User errors (``UserError``, Typer's usage errors) print a single ``error: ...`` line and exit
with code 2; a failed run (``RunFailed``) exits with 1 (DESIGN.md section 4).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer.core import TyperGroup

from mcjepa_cli import __version__
from mcjepa_cli.errors import RunFailed, UserError


class _OneLineErrors(TyperGroup):
    """A Typer group whose errors are one line on stderr instead of a boxed panel."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(
                args=argv,
                prog_name=prog_name or "mcjepa",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except (UserError, RunFailed) as e:
            print(e.one_line(), file=sys.stderr)
            code = e.exit_code
        except OSError as e:  # a file the command reads or writes (read-only, missing folder,
            # disk full): one line naming it; other OS errors are bugs and keep their traceback
            if e.filename is None:
                raise
            where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
            print(f"error: {where}: {e.strerror or e}", file=sys.stderr)
            code = 2
        except typer.Abort:
            print("error: aborted", file=sys.stderr)
            code = 130
        except typer.TyperException as e:  # Typer's bundled Click usage errors
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
                print(ctx.get_help(), file=sys.stderr)
            else:
                where = f"{ctx.command_path}: " if ctx is not None else ""
                message = " ".join(str(e.format_message()).split())  # type: ignore[attr-defined]
                print(f"error: {where}{message}", file=sys.stderr)
            code = int(getattr(e, "exit_code", 2))
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_OneLineErrors,
    name="mcjepa",
    help="Pretrain and evaluate MC-JEPA (motion + content from one ConvNeXt encoder).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        print(f"mcjepa {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """Pretrain and evaluate MC-JEPA (motion + content from one ConvNeXt encoder)."""


# Subcommands: one module each; the command function is a thin wrapper over a plain function.
from mcjepa_cli.commands import pretrain as _pretrain  # noqa: E402

app.command("pretrain")(_pretrain.pretrain_command)
from mcjepa_cli.commands import flow_eval as _flow_eval  # noqa: E402

app.command("flow-eval")(_flow_eval.flow_eval_command)
from mcjepa_cli.commands import visualize as _visualize  # noqa: E402

app.command("visualize")(_visualize.visualize_command)
from mcjepa_cli.commands import segment_eval as _segment_eval  # noqa: E402

app.command("segment-eval")(_segment_eval.segment_eval_command)
from mcjepa_cli.commands import davis_eval as _davis_eval  # noqa: E402

app.command("davis-eval")(_davis_eval.davis_eval_command)
from mcjepa_cli.commands import export as _export  # noqa: E402

app.command("export")(_export.export_command)
from mcjepa_cli.commands import datasets as _datasets  # noqa: E402

app.add_typer(_datasets.app, name="datasets")
from mcjepa_cli.commands import report as _report  # noqa: E402

app.command("report")(_report.report_command)


def main() -> None:
    """Console-script entry point (``mcjepa``)."""
    app()
