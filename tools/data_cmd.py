"""``wakeguard data``: simulate, import, record and explore datasets."""

from __future__ import annotations

import typer

from . import data_explore_cmd, data_import_cmd, data_record_cmd, data_simulate_cmd

app = typer.Typer(
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Build, import, record and explore datasets.",
)
app.command("simulate")(data_simulate_cmd.simulate_cli)
app.command("import")(data_import_cmd.import_cli)
app.command("record")(data_record_cmd.record_cli)
app.command("explore")(data_explore_cmd.explore_cli)
