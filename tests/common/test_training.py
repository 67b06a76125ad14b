import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.config import ConfigError, from_dict
from common.training import (
    Stage,
    TrainingConfig,
    balanced_class_weight,
    fit,
    read_history,
    set_batchnorm_momentum,
)


def tiny_model() -> keras.Model:
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="base", kernel_initializer=keras.initializers.GlorotUniform(1))(
        inputs
    )
    outputs = keras.layers.Dense(1, activation="sigmoid", name="head", dtype="float32")(hidden)
    return keras.Model(inputs, outputs)


def compile_binary(model, optimizer):
    model.compile(optimizer=optimizer, loss="binary_crossentropy")


def tiny_dataset() -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(16, 4)).astype("float32")
    labels = (features[:, 0] > 0).astype("float32")[:, None]
    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(8).with_options(options)


def quiet_config(**overrides) -> TrainingConfig:
    return TrainingConfig(
        **{"epochs": 5, "learning_rate": 0.05, "tensorboard": False, "verbose": 0, **overrides}
    )


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt("simulated interruption at epoch 2")


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
    data = tiny_dataset()
    config = quiet_config(early_stopping_patience=None)
    with pytest.raises(KeyboardInterrupt):
        fit(
            tiny_model,
            compile_binary,
            data,
            data,
            config,
            tmp_path / "resumed",
            extra_callbacks=[Interrupt()],
        )
    assert read_history(tmp_path / "resumed")["epoch"] == [0.0, 1.0]
    resumed = fit(tiny_model, compile_binary, data, data, config, tmp_path / "resumed")
    straight = fit(tiny_model, compile_binary, data, data, config, tmp_path / "straight")
    assert resumed.epoch == straight.epoch == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(resumed.history["loss"], straight.history["loss"], rtol=1e-5)
    for a, b in zip(resumed.model.get_weights(), straight.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    assert (tmp_path / "resumed" / "best.keras").is_file()
    assert not (tmp_path / "resumed" / "backup" / "train").exists()
    assert json.loads((tmp_path / "resumed" / "stages" / "train.json").read_text()) == {
        "epochs_done": 5,
        "epochs_planned": 5,
    }


def set_base_trainable(trainable: bool):
    def prepare(model):
        model.get_layer("base").trainable = trainable

    return prepare


def test_stages_freeze_then_fine_tune_and_continue_the_epoch_count(tmp_path):
    data = tiny_dataset()
    initial_base = tiny_model().get_layer("base").get_weights()
    config = quiet_config(early_stopping_patience=None, monitor="loss")
    head_only = Stage("head", 2, 0.05, set_base_trainable(False))
    fine_tune = Stage("fine_tune", 3, 0.01, set_base_trainable(True))

    first = fit(tiny_model, compile_binary, data, None, config, tmp_path, stages=[head_only])
    for before, after in zip(initial_base, first.model.get_layer("base").get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)

    second = fit(tiny_model, compile_binary, data, None, config, tmp_path, stages=[head_only, fine_tune])
    assert second.epoch == [0, 1, 2, 3, 4]
    assert not np.allclose(initial_base[0], second.model.get_layer("base").get_weights()[0])


def test_mixed_precision_build_inside_fit_restores_the_global_policy(tmp_path):
    config = quiet_config(epochs=1, monitor="loss")
    history = fit(tiny_model, compile_binary, tiny_dataset(), None, config, tmp_path, precision="mixed_bfloat16")
    assert history.model.get_layer("base").compute_dtype == "bfloat16"
    assert keras.config.dtype_policy().name == "float32"


def test_balanced_class_weight_hand_values():
    assert balanced_class_weight([30, 10]) == {0: pytest.approx(40 / 60), 1: pytest.approx(2.0)}
    assert balanced_class_weight([4, 0, 4]) == {0: pytest.approx(8 / 12), 1: 0.0, 2: pytest.approx(8 / 12)}


def test_config_from_dict_rejects_unknown_keys():
    assert from_dict(TrainingConfig, {"epochs": 3}).epochs == 3
    with pytest.raises(ConfigError, match=r"training: unknown key\(s\) epoch; allowed: .*epochs"):
        from_dict(TrainingConfig, {"epoch": 3}, "training")


def test_batchnorm_momentum_reaches_nested_layers_and_survives_saving(tmp_path):
    inner_input = keras.Input((4,))
    inner = keras.Model(
        inner_input, keras.layers.BatchNormalization(name="inner_bn")(inner_input), name="backbone"
    )
    inputs = keras.Input((4,))
    outputs = keras.layers.BatchNormalization(name="outer_bn")(inner(inputs))
    model = keras.Model(inputs, outputs)
    assert set_batchnorm_momentum(model, 0.9) == 2
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert reloaded.get_layer("outer_bn").momentum == 0.9
    assert reloaded.get_layer("backbone").get_layer("inner_bn").momentum == 0.9
    with pytest.raises(ValueError, match="batchnorm momentum must be in"):
        set_batchnorm_momentum(model, 1.0)


def test_model_is_built_and_compiled_inside_the_given_strategy(tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    config = quiet_config(epochs=1, monitor="loss")
    history = fit(tiny_model, compile_binary, tiny_dataset(), None, config, tmp_path, strategy)
    kernel = history.model.get_layer("base").kernel
    assert strategy.extended.variable_created_in_scope(kernel.value)
    assert not tf.distribute.get_strategy().extended.variable_created_in_scope(kernel.value)
