"""`aperture`: the command line for people (developers and operators)."""

from __future__ import annotations

import logging
import sys

import click
from rich.console import Console

console = Console()


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG.")
def main(verbose: bool) -> None:
    """Tag creative assets through Vidmob's Creative Tags API, durably."""
    from pydantic import ValidationError

    from cli.preflight import ConfigurationError
    from config import get_settings
    from config.settings import describe_invalid

    try:
        get_settings()
    except ValidationError as exc:
        raise ConfigurationError(describe_invalid(exc)) from None
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.command()
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for the batch.")
def demo(timeout: float) -> None:
    """Run the whole system (embedded PostgreSQL and Redis unless their URLs are set, the
    simulator, a worker and the dispatcher), tag a sample batch, print the tags, and exit."""
    from cli.demo import run_demo

    sys.exit(run_demo(console, timeout=timeout))


@main.command()
@click.option("--flower-port", default=5555, show_default=True)
def up(flower_port: int) -> None:
    """The demo, left running (with Flower) until Ctrl-C."""
    from cli.demo import run_demo

    sys.exit(run_demo(console, keep_running=True, flower_port=flower_port))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--pending-s", default=1.0, show_default=True, help="Seconds a job stays PENDING.")
@click.option("--processing-s", default=2.0, show_default=True, help="Seconds a job stays PROCESSING.")
@click.option("--scoring-s", default=2.0, show_default=True, help="Seconds a media scoring stays PROCESSING.")
@click.option(
    "--rate-limit-per-s",
    default=0.0,
    show_default=True,
    help="Answer 429 with Retry-After past this many requests per endpoint per second (0: no limit).",
)
@click.option(
    "--api-key",
    envvar="VIDMOB_API_KEY",
    default="sim-secret-key",
    show_default=False,
    help="The bearer key it accepts (default: $VIDMOB_API_KEY, else sim-secret-key).",
)
def simulator(
    host: str, port: int, pending_s: float, processing_s: float, scoring_s: float, rate_limit_per_s: float, api_key: str
) -> None:
    """Serve the Vidmob API simulator over HTTP."""
    from simulator import SimulatorConfig, serve

    console.print(f"Vidmob simulator on http://{host}:{port}")
    serve(
        host,
        port,
        SimulatorConfig(
            api_key=api_key,
            pending_s=pending_s,
            processing_s=processing_s,
            scoring_s=scoring_s,
            rate_limit_per_s=rate_limit_per_s,
        ),
    )


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply migrations (safe to run from several pods at once: they take turns)."""
    from models.db import DatabaseNotConfigured
    from models.migrate import upgrade as run_upgrade

    try:
        run_upgrade(revision)
    except DatabaseNotConfigured as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"database at {revision}")


from cli.media import media  # noqa: E402

main.add_command(media)

from cli.ops import callers, jobs, schema, submit  # noqa: E402

main.add_command(submit)
main.add_command(callers)
main.add_command(jobs)
main.add_command(schema)

from cli.library import assets, report, tags  # noqa: E402

main.add_command(assets)
main.add_command(tags)
main.add_command(report)

if __name__ == "__main__":
    main()
