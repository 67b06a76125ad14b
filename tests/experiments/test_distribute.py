import json
import subprocess
import sys
import textwrap

import pytest

from experiments.distribute import is_chief, make_strategy, tf_config_from_slurm
from tests.conftest import REPO_ROOT


def test_tf_config_from_slurm_expands_the_node_list():
    env = {"SLURM_JOB_NODELIST": "gpu[08-10,12],login1", "SLURM_NODEID": "2"}
    config = tf_config_from_slurm(env, port=2222)
    assert config == {
        "cluster": {"worker": ["gpu08:2222", "gpu09:2222", "gpu10:2222", "gpu12:2222", "login1:2222"]},
        "task": {"type": "worker", "index": 2},
    }


@pytest.mark.parametrize(
    ("tf_config", "expected"),
    [
        (None, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
        ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False),
        ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True),
    ],
)
def test_is_chief(monkeypatch, tf_config, expected):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert is_chief() is expected


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="unknown strategy 'horovod'; choose one of auto, one_device"):
        make_strategy("horovod")


MIRRORED_VS_ONE_DEVICE = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    import numpy as np, tensorflow as tf, keras
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from experiments.distribute import make_strategy

    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 8, 8, 1)).astype("float32")
    labels = (images.mean(axis=(1, 2, 3)) > 0).astype("float32")

    def train(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                                      keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, activation="sigmoid")])
            model.compile(keras.optimizers.SGD(0.1), "binary_crossentropy")
        data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)  # global batch 8
        model.fit(data, epochs=3, verbose=0, shuffle=False)
        return np.concatenate([w.ravel() for w in model.get_weights()]), strategy.num_replicas_in_sync

    mirrored, replicas = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    single, _ = train(make_strategy("one_device"))
    print("REPLICAS", replicas, "MAXDIFF", float(np.abs(mirrored - single).max()))
    """
)


def test_mirrored_over_two_logical_cpus_matches_one_device():
    script = MIRRORED_VS_ONE_DEVICE.format(repo=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    words = result.stdout.split()
    assert words[words.index("REPLICAS") + 1] == "2"
    assert float(words[words.index("MAXDIFF") + 1]) < 1e-5
