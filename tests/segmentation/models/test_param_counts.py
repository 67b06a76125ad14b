"""Parameter counts of our S2 segmenters against segmentation_models, the library S2 used.

Known answers: `count_params()` of segmodels-keras 0.1.0.dev13 (its Keras 3 fork), built with
`encoder_weights=None`, 1 class, sigmoid, 256x256x3 inputs (384x384x3 for PSPNet, its default size).
Its DenseNet encoders do not build on Keras 3 (it names Keras 2 layers such as "conv1/relu"); the
DenseNet121 answers come from the same code with those names spelled "conv1_relu". Beyond the counts,
the multiset of weight shapes was compared once for each pair below and is identical.
"""

from __future__ import annotations

import pytest

from segmentation.models import build_segmenter

REFERENCE_VERSION = "segmodels-keras 0.1.0.dev13"
# (decoder, encoder): count_params() of the reference model.
TABLE_PAIRS = {
    ("unet", "resnet50"): 32_602_769,
    ("unet", "vgg16"): 23_752_273,
    ("unet", "efficientnetb0"): 10_115_508,
    ("unet", "mobilenetv2"): 8_047_441,
    ("fpn", "resnet50"): 26_953_473,
    ("linknet", "resnet50"): 28_825_041,
    ("pspnet", "resnet50"): 3_834_241,
    ("pspnet", "densenet121"): 3_163_713,
}
# The pairs our S2 and S4 configurations name, beyond the table.
CONFIG_PAIRS = {
    ("unet", "resnet34"): 24_455_377,
    ("fpn", "resnet34"): 23_930_177,
    ("linknet", "resnet34"): 21_636_497,
    ("pspnet", "resnet34"): 2_742_209,
    ("fpn", "densenet121"): 9_911_745,
}


# Building one of these takes about a second; counting needs no forward pass.
@pytest.mark.parametrize(
    ("decoder", "encoder", "reference_count"),
    [
        pytest.param(*pair, count, id="-".join(pair))
        for pair, count in {**TABLE_PAIRS, **CONFIG_PAIRS}.items()
    ],
)
def test_parameter_count_matches_segmentation_models(decoder, encoder, reference_count):
    size = 384 if decoder == "pspnet" else 256
    model = build_segmenter(decoder, encoder, (size, size, 3), 1, weights=None)
    assert model.count_params() == reference_count, REFERENCE_VERSION


def test_vgg_unet_has_the_reference_centre_block():
    model = build_segmenter("unet", "vgg16", (64, 64, 3), 1)
    centre = [model.get_layer(f"center_block_{i}_conv") for i in (1, 2)]
    assert [layer.kernel.shape for layer in centre] == [(3, 3, 512, 512)] * 2
    assert model.get_layer("head_logits").kernel.shape == (3, 3, 16, 1)


def test_fpn_sum_aggregation_narrows_only_the_final_stage():
    options = {
        "pyramid_filters": 8,
        "segmentation_filters": 8,
        "encoder_kwargs": {"filters": (4, 8, 8, 8, 8, 8)},
    }
    concat = build_segmenter("fpn", "plain", (64, 64, 1), 1, **options)
    summed = build_segmenter("fpn", "plain", (64, 64, 1), 1, aggregation="sum", **options)
    assert concat.get_layer("segm_concat").output.shape[-1] == 4 * 8
    # final_stage 3x3 conv: 32 -> 8 input channels, 8 filters, no bias
    assert concat.count_params() - summed.count_params() == 3 * 3 * (32 - 8) * 8
