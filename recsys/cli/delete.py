"""`recsys delete user|item|event|invalid`: erasure and removal of bad data, audited.

The same effects as the API's DELETE endpoints (one implementation: recsys.db.erasure). Running
services on this machine's data folder forget an erased user or item on their next request (the
command touches the stamp they watch); services elsewhere do at their next reload.
"""

from __future__ import annotations

from typing import Annotated

import typer

from recsys.cli.common import DatabaseUrlOption, JsonOption, console, load_settings, open_database, print_json

app = typer.Typer(
    help="Erase users, items or events, or remove stored interactions that break the input rules.",
    no_args_is_help=True,
)

IdArgument = Annotated[str, typer.Argument(help="The external id.", show_default=False)]


def _erase(target: str, external_id: str, as_json: bool, database_url: str | None) -> None:
    from recsys.db.erasure import erase
    from service.state import feedback_stamp, touch_stamp

    settings = load_settings(database_url)
    engine = open_database(settings)
    erased = erase(engine, target, external_id, source="cli")  # type: ignore[arg-type]
    if erased.found:
        touch_stamp(feedback_stamp(settings))  # workers re-sync, and forget what was erased
    if as_json:
        print_json(vars(erased))
    elif erased.found:
        console.print(f"erased {target} {external_id!r} and {erased.interactions:,} interaction(s)")
    if not erased.found:
        if not as_json:
            console.print(f"no stored {target} {external_id!r}: nothing erased")
        raise typer.Exit(1)


@app.command("user")
def user_command(
    user_id: IdArgument, as_json: JsonOption = False, database_url: DatabaseUrlOption = None
) -> None:
    """Erase a user: interactions, offline recommendations and the user row."""
    _erase("user", user_id, as_json, database_url)


@app.command("item")
def item_command(
    item_id: IdArgument, as_json: JsonOption = False, database_url: DatabaseUrlOption = None
) -> None:
    """Erase an item: interactions, places in offline recommendations and the item row."""
    _erase("item", item_id, as_json, database_url)


@app.command("event")
def event_command(
    event_id: Annotated[
        str, typer.Argument(help="The event_id the event was posted with.", show_default=False)
    ],
    as_json: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Delete one interaction by its event_id."""
    _erase("interaction", event_id, as_json, database_url)


@app.command("invalid")
def invalid_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be removed; remove nothing.")
    ] = False,
    as_json: JsonOption = False,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Remove stored interactions that break the current input rules (values out of range,
    timestamps outside the window, bad ids), for example ones stored before the rules existed."""
    from recsys.db.erasure import delete_interactions
    from recsys.ingest.cleanup import invalid_interactions
    from recsys.ingest.rules import Rules

    settings = load_settings(database_url)
    engine = open_database(settings)
    found = invalid_interactions(engine, Rules.from_settings(settings))
    removed = 0
    if not dry_run and len(found):
        summary = found["reason"].str.replace(r"'[^']*'", "'...'", regex=True).value_counts().head(3)
        detail = "; ".join(f"{count} x {reason}" for reason, count in summary.items())
        removed = delete_interactions(engine, [int(i) for i in found["id"]], source="cli", detail=detail)
    if as_json:
        sample = found.head(20).to_dict("records")
        print_json({"invalid": len(found), "removed": removed, "dry_run": dry_run, "first": sample})
        return
    for row in found.head(10).itertuples():
        console.print(
            f"  {row.user} / {row.item} / {row.kind} value {row.value:g} ts {row.ts}: {row.reason}",
            soft_wrap=True,
        )
    outcome = f"would remove {len(found):,}" if dry_run else f"removed {removed:,}"
    console.print(f"{len(found):,} stored interaction(s) break the input rules; {outcome}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="delete")
