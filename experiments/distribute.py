"""tf.distribute strategies chosen from a string, TF_CONFIG from Slurm, and the Keras 3 multi-worker fix.

Strategy names: "auto" (mirrored over all GPUs when there are any, otherwise one device), "one_device",
"mirrored", "multi_worker_mirrored" (reads TF_CONFIG; see `tf_config_from_slurm`) and "tpu".
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import keras
import tensorflow as tf

from common.config import STRATEGIES


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Builds the named strategy. Call it before any other TensorFlow op in the process."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    gpus = tf.config.list_physical_devices("GPU")  # does not initialise the runtime, unlike logical ones
    if name == "auto":
        name = "mirrored" if gpus else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "multi_worker_mirrored needs TF_CONFIG (or run under Slurm and use tf_config_from_slurm)"
            )
        patch_keras_multi_worker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _expand_slurm_nodelist(nodelist: str) -> list[str]:
    """Expands a Slurm node list such as "gpu[01-03,07],login1" into host names."""
    hosts: list[str] = []
    for prefix, ranges, single in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,]+)", nodelist):
        if single:
            hosts.append(single)
            continue
        for part in ranges.split(","):
            first, _, last = part.partition("-")
            width = len(first)
            for number in range(int(first), int(last or first) + 1):
                hosts.append(f"{prefix}{number:0{width}d}")
    return hosts


def tf_config_from_slurm(env: Mapping[str, str] = os.environ, port: int = 12345) -> dict:
    """Derives a TF_CONFIG for MultiWorkerMirroredStrategy from Slurm's variables.

    Uses SLURM_JOB_NODELIST (one worker per node) and SLURM_NODEID (this worker's index).
    Export the result with `os.environ["TF_CONFIG"] = json.dumps(config)` before `make_strategy`.
    """
    hosts = _expand_slurm_nodelist(env["SLURM_JOB_NODELIST"])
    return {
        "cluster": {"worker": [f"{host}:{port}" for host in hosts]},
        "task": {"type": "worker", "index": int(env["SLURM_NODEID"])},
    }


def _tf_config() -> dict:
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def worker_index() -> int:
    """This process's task index in TF_CONFIG (0 without one)."""
    return int(_tf_config().get("task", {}).get("index", 0))


def is_chief() -> bool:
    """True on the process that writes final artefacts: the "chief" task if the cluster has one,
    otherwise worker 0; always True without TF_CONFIG."""
    config = _tf_config()
    task = config.get("task", {"type": "worker", "index": 0})
    if "chief" in config.get("cluster", {}):
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


# Keras versions on which the two multi-worker defects below were reproduced and the fix was tested
# (keras-team/keras#20585; see ../shared/RUNTIME.md).
_PATCHED_KERAS = re.compile(r"^3\.(8|9|1[0-9])\.")


def patch_keras_multi_worker() -> bool:
    """Fixes Keras 3's TensorFlow trainer under MultiWorkerMirroredStrategy; returns True if applied.

    1. `_maybe_symbolic_build` reduced a batch of PerReplica values across workers to get shapes;
       it now builds from this worker's first local replica (only shapes are needed).
    2. `reduce_per_replica(..., "mean")` reduced scalar logs along axis 0; it now reduces with
       axis=None for rank-0 values.
    Applied only on the Keras versions listed in `_PATCHED_KERAS`; idempotent.
    """
    if not _PATCHED_KERAS.match(keras.__version__):
        return False
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_covid_repro_patched", False):
        return True
    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("mean", "auto") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(
                lambda value: (
                    strategy.reduce("MEAN", value, axis=None)
                    if value.shape.rank == 0
                    else strategy.reduce("MEAN", value, axis=0)
                ),
                values,
            )
        return original_reduce(values, strategy, reduction)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: (
                        self.distribute_strategy.experimental_local_results(value)[0]
                        if isinstance(value, tf.distribute.DistributedValues)
                        else value
                    ),
                    next(batches),
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer._covid_repro_patched = True
    return True
