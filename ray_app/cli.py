"""The ``ray-app`` command line (also ``python -m ray_app``): the root that registers every
command group of :mod:`ray_app.commands` and turns errors a user can fix into one line."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ray_app.commands import (
    batch,
    broker,
    data,
    demo,
    fairness,
    ingest,
    loop,
    registry,
    replay,
    retrain,
    schemas,
    serve,
    shilling,
    snapshots,
    state,
    train,
)
from ray_app.commands.common import error_message, print_error

ERROR_EXIT_CODE = 2
"""Exit code of a command that failed with an error the user can fix (as for a usage error)."""


class _RootGroup(TyperGroup):
    """Runs a command; an error the user can fix becomes ``error: <message>`` and exit code 2
    (the traceback only with ``--debug``). Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer's own (vendored) click.Context
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = error_message(exc)
            if message is None or ctx.params.get("debug"):
                raise
            print_error(message)
            raise typer.Exit(ERROR_EXIT_CODE) from None


def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging, Kafka client logs included.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback when a command fails.")
    ] = False,
) -> None:
    """Movie recommendations on Ray: Kafka → Parquet → train → registry → Serve."""
    del debug  # read by _RootGroup.invoke from the context once the command has run
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # kafka-python logs every refused connection and reconnect at ERROR, and Ray Data logs
        # progress at INFO; a failure reaches the user as one line anyway (-v shows them all).
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        logging.getLogger("ray.data").setLevel(logging.WARNING)


def build_app() -> typer.Typer:
    """The ``ray-app`` Typer app with every command group registered, in pipeline order."""
    root = typer.Typer(
        cls=_RootGroup,
        help="Movie recommendations on Ray: Kafka → Parquet → train → registry → Serve.",
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
    )
    root.callback()(_root)
    for group in (
        broker,
        data,
        replay,
        ingest,
        state,
        snapshots,
        schemas,
        shilling,
        train,
        registry,
        serve,
        batch,
        loop,
        fairness,
        retrain,
        demo,
    ):
        group.register(root)
    return root


app = build_app()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="ray-app")
