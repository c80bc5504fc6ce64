"""``mcjepa report``: PNG plots of a run (finished or still training) and a flow panel."""

from __future__ import annotations

import typer


def report_command(
    run: str = typer.Argument(
        "latest", metavar="RUN", help="Run directory, or 'latest' (the newest run under runs/)."),
    flow: bool = typer.Option(
        True, "--flow/--no-flow", help="Also draw one held-out synthetic pair with the newest "
        "checkpoint's flow (needs checkpoints/last.pt; builds the model on the CPU)."),
) -> None:
    """Plot a run's loss terms, learning rates, throughput and EPE curves into <run>/report/."""
    from pathlib import Path

    from mcjepa_cli.engine.checkpoint import newest_run, say_latest
    from mcjepa_cli.errors import UserError
    from mcjepa_cli.viz.report import write_report

    if run == "latest":
        run_dir = newest_run()
        say_latest(run_dir)
    else:
        run_dir = Path(run).expanduser()
        if not run_dir.is_dir():
            raise UserError(run_dir, "expected a run directory (holding metrics.jsonl)")
    report, written = write_report(run_dir, flow_panel=flow)
    for path in written:
        print(f"wrote {path}")
    print(f"wrote {report}")
