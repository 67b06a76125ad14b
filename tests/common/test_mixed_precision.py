import keras
import pytest

from common.mixed_precision import precision_policy, set_mixed_precision


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
