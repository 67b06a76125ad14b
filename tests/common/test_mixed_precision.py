import keras
import numpy as np
import pytest

from classification.models import build_classifier
from common import mixed_precision
from common.mixed_precision import (
    PrecisionChoice,
    auto_policy,
    choose_precision,
    precision_policy,
    set_mixed_precision,
)
from segmentation.models import build_segmenter


def test_policy_applies_inside_and_is_restored_after():
    assert keras.config.dtype_policy().name == "float32"
    with precision_policy("mixed_bfloat16"):
        layer = keras.layers.Dense(2)
        output = keras.layers.Dense(1, dtype="float32")
    assert keras.config.dtype_policy().name == "float32"
    assert (layer.compute_dtype, layer.variable_dtype) == ("bfloat16", "float32")
    assert output.compute_dtype == "float32"


def test_none_means_float32_and_unknown_raises():
    previous = set_mixed_precision(None)
    assert previous == "float32" and keras.config.dtype_policy().name == "float32"
    with pytest.raises(ValueError, match="policy 'fp8' is not one of"):
        set_mixed_precision("fp8")


CPUINFO_BF16 = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile
processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile
"""
CPUINFO_PLAIN = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n"


@pytest.fixture
def mocked_cpu(tmp_path, monkeypatch):
    """Points "auto" at a written /proc/cpuinfo text and a machine without GPUs."""

    def use(text: str) -> None:
        (tmp_path / "cpuinfo").write_text(text)
        monkeypatch.setattr(mixed_precision, "CPUINFO", tmp_path / "cpuinfo")
        monkeypatch.setattr(mixed_precision, "gpu_capabilities", lambda: [])

    return use


def test_auto_reads_the_cpu_flags(mocked_cpu):
    mocked_cpu(CPUINFO_BF16)
    choice = choose_precision("auto")
    assert choice == PrecisionChoice("auto", "mixed_bfloat16", "CPU without GPU, flags avx512_bf16")
    mocked_cpu(CPUINFO_PLAIN)
    assert choose_precision("auto").policy == "float32"
    mocked_cpu("processor\t: 0\n")  # no flags line at all
    assert choose_precision("auto").policy == "float32"


def test_a_named_policy_is_kept_and_unknown_names_raise(mocked_cpu):
    mocked_cpu(CPUINFO_BF16)
    assert choose_precision("float32").as_record() == {
        "requested": "float32",
        "policy": "float32",
        "reason": "named in the config or on the command line",
    }
    assert choose_precision(None).policy == "float32"
    with pytest.raises(ValueError, match="precision 'half' is not one of"):
        choose_precision("half")


@pytest.mark.parametrize(
    ("gpus", "policy"),
    [([(9, 0)], "mixed_bfloat16"), ([(8, 0), (7, 5)], "mixed_float16"), ([(6, 1)], "float32")],
)
def test_gpus_decide_before_cpu_flags(gpus, policy):
    assert auto_policy({"avx512_bf16"}, gpus)[0] == policy


def test_models_built_under_the_auto_policy_output_float32(mocked_cpu):
    mocked_cpu(CPUINFO_BF16)
    with precision_policy(choose_precision("auto").policy):
        classifier = build_classifier("plain_cnn", (16, 16, 1), 1, filters=(8, 16))
        segmenter = build_segmenter("unet", "plain", (32, 32, 1), 1, encoder_kwargs={"filters": (4, 8)})
    assert classifier.get_layer("logits").compute_dtype == "bfloat16"
    assert segmenter.get_layer("decoder_stage1_1_conv").compute_dtype == "bfloat16"
    assert classifier.predict(np.zeros((2, 16, 16, 1)), verbose=0).dtype == np.float32
    assert segmenter.predict(np.zeros((2, 32, 32, 1)), verbose=0).dtype == np.float32
