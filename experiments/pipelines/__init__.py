"""Composed pipelines by name: a config's `pipeline: <name>` runs the function registered under it.

`PIPELINE_NAMES` declares the names (checked when a config is loaded, without importing TensorFlow);
each pipeline module registers its `run(context, prepared) -> Summary` with
`@register_pipeline("<name>")` when it is imported (`experiments.runner` imports them all). A
composed pipeline runs its parts through `context.run_task`, never through the runner module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from common.config import ConfigError

if TYPE_CHECKING:
    from experiments.data import PreparedData
    from experiments.runner import RunContext
    from experiments.tasks import Summary

    PipelineRun = Callable[[RunContext, PreparedData], Summary]

PIPELINE_NAMES = ("demo", "lung_then_classify", "nodule_transfer", "streams", "uncertainty")
_REGISTERED: dict[str, PipelineRun] = {}


def check_pipeline_name(name: str) -> str:
    """Returns `name`; ConfigError naming the known pipelines when it is not one of them."""
    if name not in PIPELINE_NAMES:
        raise ConfigError(f"pipeline: unknown pipeline {name!r}; known: {', '.join(PIPELINE_NAMES)}")
    return name


def register_pipeline(name: str) -> Callable[[PipelineRun], PipelineRun]:
    """Decorator: registers a pipeline's run function under `name` (one of `PIPELINE_NAMES`)."""
    check_pipeline_name(name)

    def register(run: PipelineRun) -> PipelineRun:
        if _REGISTERED.get(name, run) is not run:
            raise ValueError(f"pipeline {name!r} is registered twice")
        _REGISTERED[name] = run
        return run

    return register


def pipeline_run(name: str) -> PipelineRun:
    """The run function registered under `name`; ConfigError for an unknown name, LookupError for a
    declared one whose module was not imported."""
    check_pipeline_name(name)
    if name not in _REGISTERED:
        raise LookupError(f"pipeline {name!r} is not registered: import experiments.runner first")
    return _REGISTERED[name]
