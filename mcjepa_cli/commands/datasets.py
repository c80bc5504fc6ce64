"""``mcjepa datasets check``: is each dataset where the commands look, in a layout they read?"""

from __future__ import annotations

import os
from pathlib import Path

import typer

app = typer.Typer(
    name="datasets",
    help="Inspect the datasets mcjepa reads (roots, layouts, counts, problems).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_STYLES = {"ok": "green", "warning": "yellow", "broken": "bold red", "not found": "dim"}


@app.callback()
def _datasets() -> None:
    """Inspect the datasets mcjepa reads (roots, layouts, counts, problems)."""


def print_checks(checks: list) -> None:
    """Print ``DatasetCheck`` rows as a rich table and a one-line summary."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    base = os.environ.get("MCJEPA_DATA")
    base_path = Path(base).expanduser() if base else None
    rows = []
    for c in checks:
        counts = ", ".join(f"{k} {v}" for k, v in c.counts.items())
        root = c.root or "-"
        if c.root and base_path is not None and Path(c.root).parent == base_path:
            root = f"$MCJEPA_DATA/{Path(c.root).name}"  # short; the JSON keeps the full path
        rows.append([c.name, c.status, root, c.layout or "-", counts or "-", c.problem or "-"])
    table = Table(title="datasets check", box=box.SIMPLE_HEAD, pad_edge=False, expand=True)
    table.add_column("dataset", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("root", overflow="fold",
                     min_width=min(24, max((len(r[2]) for r in rows), default=1)))
    table.add_column("layout", overflow="fold", ratio=3)
    table.add_column("counts", overflow="fold", ratio=3)
    table.add_column("first problem", overflow="fold", ratio=4)
    for row in rows:  # Text, not markup: paths and messages may hold [brackets]
        table.add_row(*(Text(v, _STYLES[v] if i == 1 else "") for i, v in enumerate(row)))
    console = Console()
    if not console.is_terminal:  # a file or pipe: no need to squeeze into 80 columns
        console = Console(width=200)
    console.print(table)
    by_status = {s: sum(c.status == s for c in checks) for s in _STYLES}
    console.print(", ".join(f"{n} {s}" for s, n in by_status.items() if n), markup=False,
                  highlight=False)


@app.command("check")
def check_command(
    name: str = typer.Argument(
        None, help="The dataset to check (sintel, kitti-2015, kitti-2012, chairs, things, hd1k, "
        "middlebury, frames, video, voc, cityscapes, ade20k, davis, imagenet, imagefolder); "
        "default: every dataset, those not found listed as such.", show_default=False),
    root: str = typer.Option(
        None, "--root", help="The dataset's own folder (with NAME only); default "
        "$MCJEPA_DATA/<Name>.", show_default=False),
    json_file: str = typer.Option(
        None, "--json", help="Also write the checks as a JSON list here ('-' = standard output, "
        "the table then goes to stderr).", show_default=False),
) -> None:
    """Check dataset folders: root found, layout matched, counts, first problem (exit 1 if broken).

    Each dataset is listed and its first sample of each kind (frames, flow, masks, labels,
    annotations) is opened with the readers the other commands use.
    """
    from mcjepa_cli.io.json_out import human_output_to_stderr, is_stdout

    with human_output_to_stderr(json_file):
        from mcjepa_cli.data.check import check_datasets, failed, write_checks_json

        checks = check_datasets(name, root)
        print_checks(checks)
        if json_file is not None:
            write_checks_json(json_file, checks)
            if not is_stdout(json_file):
                print(f"wrote {json_file}")
    if failed(checks, requested=name is not None):
        raise typer.Exit(code=1)
