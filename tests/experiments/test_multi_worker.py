"""A real config trained by 2 MultiWorkerMirroredStrategy workers on 127.0.0.1.

Both workers must end with identical trainable weights (BatchNorm moving statistics are updated from
each worker's own batches, as Keras' BatchNormalization is not synchronised by default, so they are
compared separately and only loosely), and only the chief may write the run folder. The
workers run under `timeout -k` (a worker whose peer dies blocks and ignores SIGTERM; RUNTIME.md).
"""

import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np

from tests.conftest import REPO_ROOT

TINY = [
    "data.phantom=true",
    "data.image_size=32",
    "data.batch_size=2",
    "training.epochs=1",
    "training.verbose=0",
    "training.tensorboard=false",
    "evaluation.bootstrap_resamples=10",
    "data.val_fraction=0.25",
    "data.test_fraction=0.25",
    "model.options={encoder_kwargs: {filters: [4, 8, 16]}}",
    # one split, no augmentation: FILE auto-sharding cannot split the `Dataset.random` source that
    # augmentation zips in, and a cross-validated row runs its folds one after another
    "data.augment={}",
    "data.folds=null",
]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_two_workers_train_a_config_to_identical_weights_and_only_the_chief_writes(tmp_path):
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    command = [
        "timeout",
        "-k",
        "5",
        "480",
        sys.executable,
        "-m",
        "experiments",
        "run",
        "s3_unet_lung_zenodo",
        "--out",
        str(tmp_path / "runs"),
        "--strategy",
        "multi_worker_mirrored",
    ]
    for override in TINY:
        command += ["--set", override]
    workers = []
    for index in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        workers.append(
            subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = [worker.communicate()[0] for worker in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]

    run_folders = [p for p in (tmp_path / "runs" / "s3_unet_lung_zenodo").iterdir() if p.name != "latest"]
    assert len(run_folders) == 1, "only the chief writes a run folder"
    chief_dir = run_folders[0]
    assert (chief_dir / "summary.json").is_file() and (chief_dir / "run.json").is_file()
    assert json.loads((chief_dir / "run.json").read_text())["hardware"]["replicas"] == 2
    worker_dir = tmp_path / "runs" / ".cache" / "worker-1" / "s3_unet_lung_zenodo"
    assert not (worker_dir / "summary.json").exists()

    import segmentation.models  # noqa: F401  (registers the custom layers for loading)

    chief = keras.saving.load_model(chief_dir / "best.keras", compile=False)
    other = keras.saving.load_model(worker_dir / "best.keras", compile=False)
    assert len(chief.trainable_weights) == len(other.trainable_weights) > 0
    for a, b in zip(chief.trainable_weights, other.trainable_weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6, err_msg=a.path)
    for a, b in zip(chief.non_trainable_weights, other.non_trainable_weights, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=0.1, err_msg=a.path)
