"""`ponder`: the command line (typer + rich), a module per command group. It sits on top:
nothing imports it. ``main`` is the console script."""

# Each module adds its commands to the app, in the order --help lists them.
# isort: off
from ponder.cli import turns, serving, runs, schedules, keys  # noqa: F401
from ponder.cli import evaluation, knowledge, memories, demo  # noqa: F401
# isort: on
from ponder.cli.common import app, fail
from ponder.config import missing_extra
from ponder.errors import PonderError

__all__ = ["app", "main"]


def main() -> None:
    """The ``ponder`` console script: a user's mistake is one line on stderr and exit code 2,
    never a traceback."""
    try:
        app()  # standalone: typer reports usage errors and exits by itself
    except PonderError as exc:  # user mistakes and failures outside our control
        fail(str(exc))
    except ModuleNotFoundError as exc:
        # Wherever ponder (or a library it calls) imports a module of an optional extra.
        if (message := missing_extra(exc)) is None:
            raise  # not an optional extra: a broken install, or a target's own import
        fail(message)

