"""The layers at every model's input: grey-to-RGB and a backbone family's input scaling.

Every classifier and segmenter takes images (B, H, W, C) as float in [0, 1]; `InputScaling` maps them
to the scale the backbone was trained on inside the model, so a saved `.keras` file carries its own
preprocessing and data pipelines feed [0, 1] images. `scale_images` is the same mapping as a
function of tensors (also used inside tf.data by `tfrecords.scaling`).

Importing this module registers the layers for `.keras` loading under their names here and under
the names of the layers they replace (issue 12): "classification>InputScaling",
"classification>GrayToRGB" and "covid_segmentation>InputScaling" (`SegmentationInputScaling`).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

# ImageNet channel statistics on the 0-255 scale, as `keras.applications.imagenet_utils.preprocess_input`
# uses them: "caffe" subtracts the BGR mean; "torch" subtracts the RGB mean 255 x (0.485, 0.456, 0.406)
# and divides by the RGB std 255 x (0.229, 0.224, 0.225).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (123.675, 116.28, 103.53)
TORCH_STD_RGB = (58.395, 57.12, 57.375)
# mode -> what it does to x in [0, 1]:
#   "caffe": 255 x, RGB -> BGR, minus the ImageNet BGR mean, as for VGG and ResNet (v1);
#   "torch": (255 x - mean) / std with the ImageNet RGB statistics, as for DenseNet;
#   "tf": 2 x - 1, i.e. [-1, 1], as for Inception, Xception, ResNetV2, MobileNetV2, NASNet;
#   "raw": 255 x, for backbones that rescale inside (EfficientNet);
#   "none": x unchanged, for the models we train from scratch.
SCALING_MODES = ("caffe", "torch", "tf", "raw", "none")


def check_mode(mode: str) -> str:
    """Returns `mode`; raises ValueError naming the known modes when it is not one of `SCALING_MODES`."""
    if mode not in SCALING_MODES:
        raise ValueError(f"unknown input scaling mode {mode!r}; known: {', '.join(SCALING_MODES)}")
    return mode


def scale_images(images, mode: str, torch_mean_rgb: tuple[float, float, float] = TORCH_MEAN_RGB):
    """images (..., C) float in [0, 1] -> the same shape and dtype on the scale of `mode`.

    C = 3 is taken as RGB. For any other C (grayscale with a backbone built on one channel), "caffe"
    and "torch" use the mean of the three channel statistics and keep the channel order. The
    constants take the images' dtype, so the arithmetic runs in it.
    """
    check_mode(mode)
    if mode == "none":
        return images
    if mode == "tf":
        return images * 2.0 - 1.0
    if mode == "raw":
        return images * 255.0
    rgb = images.shape[-1] == 3
    if mode == "torch":
        mean = _statistic(torch_mean_rgb, rgb, images.dtype)
        return (images * 255.0 - mean) / _statistic(TORCH_STD_RGB, rgb, images.dtype)
    bgr = ops.flip(images, axis=-1) if rgb else images
    return bgr * 255.0 - _statistic(CAFFE_MEAN_BGR, rgb, images.dtype)


def _statistic(values: tuple[float, float, float], per_channel: bool, dtype):
    """Per-channel constants as a (3,) tensor of `dtype`, or their mean as a (1,) tensor."""
    return ops.convert_to_tensor(values if per_channel else [sum(values) / 3], dtype)


@keras.saving.register_keras_serializable(package="common")
class InputScaling(layers.Layer):
    """Maps images in [0, 1] to a backbone family's input scale (`scale_images` with `mode`).

    images: (B, H, W, C) float in [0, 1]; output the same shape. Runs in float32 unless given another
    dtype, so the constants are exact under mixed precision.
    """

    torch_mean_rgb: tuple[float, float, float] = TORCH_MEAN_RGB

    def __init__(self, mode: str, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mode = check_mode(mode)

    def call(self, images):
        return scale_images(ops.cast(images, self.compute_dtype), self.mode, self.torch_mean_rgb)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="covid_segmentation", name="InputScaling")
class SegmentationInputScaling(InputScaling):
    """`InputScaling` as segmentation models saved it before issue 12, for loading those files.

    Its mode "x255" is "raw", and its "torch" subtracted the caffe mean in RGB order (123.68, 116.779,
    103.939) instead of torch's; both are kept so the saved models give the outputs they gave.
    """

    torch_mean_rgb = CAFFE_MEAN_BGR[::-1]

    def __init__(self, mode: str, **kwargs: Any) -> None:
        super().__init__("raw" if mode == "x255" else mode, **kwargs)


@keras.saving.register_keras_serializable(package="common")
class GrayToRGB(layers.Layer):
    """Repeats a one-channel image to three channels: (B, H, W, 1) -> (B, H, W, 3), dtype unchanged.

    Used when ImageNet (or other three-channel) weights meet grayscale CT or X-ray input.
    """

    def call(self, images):
        return ops.repeat(images, 3, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


# The classification package registered the same two layers under its own name.
keras.saving.get_custom_objects().update(
    {"classification>InputScaling": InputScaling, "classification>GrayToRGB": GrayToRGB}
)
