"""One root for the errors ponder raises on purpose; "not found" is one error everywhere."""

import importlib
import inspect
import pkgutil

import pytest

import ponder
from ponder import ConfigurationError, NotFoundError, PonderError


def _error_classes():
    for module in pkgutil.walk_packages(ponder.__path__, "ponder."):
        if module.name.endswith(".__main__"):  # runs the CLI when imported
            continue
        loaded = importlib.import_module(module.name)
        for _, value in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(value, Exception) and value.__module__ == module.name:
                yield value


def test_every_error_ponder_defines_has_the_one_root():
    errors = set(_error_classes())
    assert len(errors) > 10
    # Private ones signal between two functions of one module and never reach a user.
    public = {e for e in errors if not e.__name__.startswith("_")}
    assert [e.__name__ for e in public if not issubclass(e, PonderError)] == []


def test_not_found_is_a_key_error_whose_message_reads_plainly():
    error = NotFoundError("no run has the id 'x': see ponder runs list")
    assert isinstance(error, KeyError) and isinstance(error, PonderError)
    assert str(error) == "no run has the id 'x': see ponder runs list"
    assert issubclass(ConfigurationError, ValueError)


async def test_commands_on_missing_things_raise_not_found_and_get_returns_none(tmp_path):
    from ponder.graphs.runs import RunRecorder
    from ponder.graphs.scheduler import Scheduler

    url = f"sqlite:///{tmp_path}/p.db"
    scheduler = Scheduler(url)
    assert await scheduler.get("nightly") is None
    for command in (scheduler.pause, scheduler.resume, scheduler.remove, scheduler.run_now):
        with pytest.raises(NotFoundError, match="no schedule is named 'nightly': see ponder "
                                                "schedule list"):
            await command("nightly")
    runs = RunRecorder(url)
    assert await runs.get("run_x") is None
    with pytest.raises(NotFoundError, match="no run has the id 'run_x': see ponder runs list"):
        await runs.cancel("run_x")
    await scheduler.aclose()
    await runs.aclose()
