"""Registry, head, our own backbones, weights and fine-tuning blocks: cheap tests."""

import signal

import keras
import numpy as np
import pytest

from classification.models import (
    backbone_blocks,
    base_model,
    build_classifier,
    input_scaling_mode,
    list_classifiers,
    smallest_input_size,
    unfreeze_top_blocks,
)
from classification.models.plain_cnn import plain_cnn
from classification.models.vgg19_bn import vgg19_bn
from common.layers import GrayToRGB
from common.weights import PretrainedWeightsUnavailable

ZOO = [
    "vgg16", "vgg19", "resnet50", "resnet101", "resnet50v2", "inceptionv3", "inceptionresnetv2", "xception",
    "densenet121", "mobilenetv2", "nasnetlarge", *[f"efficientnetb{k}" for k in range(8)], "vgg19_bn", "plain_cnn",
]  # fmt: skip


def tiny_cnn(**kwargs) -> keras.Model:
    """plain_cnn with 2 blocks of 8 and 16 filters on 16x16 grey images: 1,320 backbone parameters."""
    return build_classifier("plain_cnn", (16, 16, 1), 1, filters=(8, 16), **kwargs)


def test_registry_lists_the_seed_zoo_in_order():
    assert list_classifiers() == ZOO


def test_unknown_name_error_lists_the_known_names():
    with pytest.raises(ValueError) as error:
        build_classifier("resnet18", (32, 32, 3), 1)
    assert str(error.value) == f"unknown classifier 'resnet18'; known: {', '.join(ZOO)}"
    with pytest.raises(ValueError, match="unknown classifier 'resnet18'"):
        smallest_input_size("resnet18")


def test_smallest_input_sizes_and_scaling_modes():
    sizes = {name: smallest_input_size(name) for name in ZOO}
    assert sizes == {
        **dict.fromkeys(ZOO, 32),
        "inceptionv3": 75,
        "inceptionresnetv2": 75,
        "xception": 71,
        "plain_cnn": 16,
    }
    assert [input_scaling_mode(name) for name in ("vgg16", "resnet50", "resnet50v2", "densenet121")] == [
        "caffe", "caffe", "tf", "torch",
    ]  # fmt: skip
    assert [input_scaling_mode(name) for name in ("efficientnetb3", "vgg19_bn", "plain_cnn")] == [
        "raw",
        "torch",
        "none",
    ]
    assert smallest_input_size("ResNet50") == 32  # names are case-insensitive


def test_keras_rejects_inputs_below_the_smallest_size():
    with pytest.raises(ValueError, match="Input size must be at least 32x32"):
        build_classifier("vgg16", (31, 31, 1), 1)


def test_classifier_layout_and_names():
    model = tiny_cnn()
    assert model.name == "plain_cnn"
    assert [layer.name for layer in model.layers] == [
        "image", "input_scaling", "backbone", "avg_pool", "head_dropout", "logits", "probabilities",
    ]  # fmt: skip
    assert base_model(model).count_params() == 72 + 32 + 1152 + 64  # conv1 + bn1 + conv2 + bn2
    assert model.output_shape == (None, 1)


@pytest.mark.parametrize(
    ("output", "num_outputs", "activation"),
    [("binary", 1, "sigmoid"), ("multiclass", 3, "softmax"), ("multilabel", 3, "sigmoid")],
)
def test_output_types(output, num_outputs, activation):
    model = build_classifier("plain_cnn", (16, 16, 1), num_outputs, output=output, filters=(8, 16))
    assert model.output_shape == (None, num_outputs)
    assert model.get_layer("probabilities").activation.__name__ == activation
    probabilities = model.predict(np.random.default_rng(0).random((4, 16, 16, 1)), verbose=0)
    assert probabilities.shape == (4, num_outputs) and ((probabilities > 0) & (probabilities < 1)).all()
    sums = probabilities.sum(axis=1)
    if output == "multiclass":
        np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
    elif output == "multilabel":
        assert not np.allclose(sums, 1.0)


@pytest.mark.parametrize(
    ("output", "num_outputs", "message"),
    [
        ("binary", 2, "output='binary' has 1 sigmoid unit; got num_outputs=2 (use 'multiclass')"),
        ("multiclass", 1, "output='multiclass' needs num_outputs >= 2; got 1"),
        ("multilabel", 0, "num_outputs must be >= 1; got 0"),
        ("regression", 1, "unknown output 'regression'; known: binary, multiclass, multilabel"),
    ],
)
def test_invalid_outputs_are_rejected(output, num_outputs, message):
    with pytest.raises(ValueError) as error:
        build_classifier("plain_cnn", (16, 16, 1), num_outputs, output=output, filters=(8, 16))
    assert str(error.value) == message


def test_head_units_adds_a_hidden_layer():
    model = tiny_cnn(head_units=5)
    assert model.get_layer("head_dense").units == 5
    assert model.get_layer("logits").kernel.shape == (5, 1)


def test_output_is_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_cnn()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("logits").compute_dtype == "bfloat16"
    assert model.get_layer("input_scaling").compute_dtype == "float32"
    assert model.output.dtype == "float32"
    assert model.predict(np.zeros((1, 16, 16, 1)), verbose=0).dtype == np.float32


def test_grayscale_builds_the_backbone_on_one_channel_without_weights():
    grey, rgb = (build_classifier("vgg16", (32, 32, channels), 1) for channels in (1, 3))
    assert base_model(grey).input_shape == (None, 32, 32, 1)
    assert "gray_to_rgb" not in [layer.name for layer in grey.layers]
    # only block1_conv1's kernel differs: 3 x 3 x (3 - 1) x 64
    assert base_model(rgb).count_params() - base_model(grey).count_params() == 1152
    assert base_model(rgb).count_params() == 14_714_688  # keras.applications VGG16, include_top=False


def test_a_local_weights_file_loads_into_a_grey_classifier_that_reloads(tmp_path):
    source = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "mobilenetv2.weights.h5"
    source.save_weights(path)
    model = build_classifier("mobilenetv2", (32, 32, 1), 1, weights=path)
    assert model.get_layer("gray_to_rgb") is not None
    assert base_model(model).input_shape == (None, 32, 32, 3)
    loaded = base_model(model).weights
    assert len(loaded) == len(source.weights) == 52 + 4 * 52  # 52 convolutions without bias, each with BN
    for expected, actual in zip(source.weights, loaded, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(expected), keras.ops.convert_to_numpy(actual)
        )
    assert base_model(model).get_layer("bn_Conv1").momentum == 0.999  # Keras's value when pretrained
    model.save(tmp_path / "classifier.keras")
    reloaded = keras.models.load_model(tmp_path / "classifier.keras")
    assert isinstance(reloaded.get_layer("gray_to_rgb"), GrayToRGB)
    images = np.random.default_rng(0).random((2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(reloaded(images), model(images), atol=1e-6)


def batchnorm_momenta(model: keras.Model) -> set[float]:
    return {
        layer.momentum
        for layer in base_model(model).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }


def test_bn_momentum_is_faster_from_scratch_and_survives_reload(tmp_path):
    assert batchnorm_momenta(tiny_cnn()) == {0.9}
    model = tiny_cnn(bn_momentum=0.5)
    assert batchnorm_momenta(model) == {0.5}
    model.save(tmp_path / "tiny.keras")
    assert batchnorm_momenta(keras.models.load_model(tmp_path / "tiny.keras")) == {0.5}


def test_a_missing_weights_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.weights.h5: weights file not found"):
        build_classifier("mobilenetv2", (32, 32, 3), 1, weights=tmp_path / "nope.weights.h5")


def test_pretrained_weights_need_one_or_three_channels(tmp_path):
    with pytest.raises(ValueError, match="mobilenetv2: pretrained weights need 1 or 3 input channels; got 2"):
        build_classifier("mobilenetv2", (32, 32, 2), 1, weights="imagenet")


@pytest.fixture
def fails_within_60_s():
    """Turns a hang (e.g. a network call that never returns) into a test failure after 60 s."""

    def timeout(signum, frame):
        raise TimeoutError("weights='imagenet' did not fail within 60 s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_imagenet_weights_offline_raise_quickly(fails_within_60_s):
    """Needs no network and no ~/.keras/models/mobilenet_v2 file, as on the project's machines."""
    with pytest.raises(
        PretrainedWeightsUnavailable, match="MobileNetV2: ImageNet weights could not be downloaded"
    ):
        build_classifier("mobilenetv2", (96, 96, 1), 1, weights="imagenet")


def test_our_backbones_have_no_imagenet_weights():
    with pytest.raises(PretrainedWeightsUnavailable) as error:
        build_classifier("vgg19_bn", (32, 32, 1), 1, weights="imagenet")
    assert str(error.value) == (
        "vgg19_bn: keras.applications publishes no ImageNet weights for it. Remedies: pass a "
        "local weights file (weights=/path/to/file.weights.h5) or use weights=None."
    )


def test_own_backbone_weights_round_trip_through_a_file(tmp_path):
    source = plain_cnn(input_shape=(16, 16, 3), filters=(8, 16))
    source.set_weights([np.full(w.shape, index + 0.5, "float32") for index, w in enumerate(source.weights)])
    path = tmp_path / "plain.weights.h5"
    source.save_weights(path)
    model = build_classifier("plain_cnn", (16, 16, 1), 1, weights=path, filters=(8, 16))
    for index, weight in enumerate(base_model(model).weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), np.full(weight.shape, index + 0.5))


def test_vgg19_bn_topology_and_parameter_count():
    model = vgg19_bn(input_shape=(64, 64, 3))
    assert model.output_shape == (None, 2, 2, 512)
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    bns = [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(convs) == len(bns) == 16
    assert convs[:3] == ["block1_conv1", "block1_conv2", "block2_conv1"] and bns[-1] == "block5_bn4"
    # VGG19's 20,024,384 convolution parameters + 2 x 5,504 BN scale/offset + 2 x 5,504 moving statistics
    assert model.count_params() == 20_024_384 + 4 * 5_504
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    assert trainable == 20_035_392  # torchvision vgg19_bn().features


def test_plain_cnn_options_and_size_check():
    model = plain_cnn(input_shape=(32, 32, 1), filters=(4, 8, 16), convs_per_block=2)
    assert model.output_shape == (None, 4, 4, 16)
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)] == [
        "block1_conv1", "block1_conv2", "block2_conv1", "block2_conv2", "block3_conv1", "block3_conv2",
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"plain_cnn: input must be at least 8x8; got \(4, 4, 1\)"):
        plain_cnn(input_shape=(4, 4, 1), filters=(4, 8, 16))


def trainable_names(model: keras.Model) -> list[str]:
    return [weight.path for weight in model.trainable_weights]


def test_unfreeze_top_blocks_keeps_batchnorm_frozen():
    model = tiny_cnn(dropout=0.0)
    assert [block.name for block in backbone_blocks(model)] == ["block1", "block2"]
    assert unfreeze_top_blocks(model, 0) == []
    assert trainable_names(model) == ["logits/kernel", "logits/bias"]
    assert unfreeze_top_blocks(model, 1) == ["block2"]
    assert trainable_names(model) == ["block2_conv1/kernel", "logits/kernel", "logits/bias"]
    assert unfreeze_top_blocks(model, 5, train_batchnorm=True) == ["block1", "block2"]
    assert len(trainable_names(model)) == 2 * 3 + 2
    with pytest.raises(ValueError, match="num_blocks must be >= 0; got -1"):
        unfreeze_top_blocks(model, -1)


def test_frozen_batchnorm_runs_in_inference_mode_while_unfrozen_blocks_train():
    model = tiny_cnn(dropout=0.0)
    images = np.random.default_rng(1).random((2, 16, 16, 1)).astype("float32")
    trained_from_scratch = keras.ops.convert_to_numpy(model(images, training=True))
    assert not np.allclose(trained_from_scratch, model(images, training=False))  # BN uses batch statistics
    unfreeze_top_blocks(model, 1)
    np.testing.assert_allclose(model(images, training=True), model(images, training=False), rtol=1e-6)
    before = weight_values(model)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    model.train_on_batch(images, np.array([[0.0], [1.0]], "float32"))
    after = weight_values(model)
    changed = {path for path in before if not np.array_equal(before[path], after[path])}
    assert changed == {"block2_conv1/kernel", "logits/kernel", "logits/bias"}  # moving statistics kept


def weight_values(model: keras.Model) -> dict[str, np.ndarray]:
    return {weight.path: keras.ops.convert_to_numpy(weight) for weight in model.weights}


def test_backbone_helpers_reject_other_models():
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="other")
    with pytest.raises(ValueError, match="other: no layer named 'backbone'; not built by build_classifier"):
        base_model(other)
