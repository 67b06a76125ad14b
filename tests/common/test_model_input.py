from __future__ import annotations

import numpy as np
import pytest

from common.model_input import model_input


@pytest.mark.parametrize(("dtype", "full"), [(np.uint8, 255), (np.uint16, 65535)])
def test_stored_values_scale_by_the_dtype_maximum(dtype, full):
    stored = np.array([[0, full], [full // 2, full]], dtype)
    result = model_input(stored, (2, 2), 3)
    assert result.shape == (2, 2, 3) and result.dtype == np.float32
    np.testing.assert_array_equal(result[..., 0], result[..., 2])
    np.testing.assert_allclose(result[..., 0], [[0.0, 1.0], [(full // 2) / full, 1.0]], rtol=1e-7)


def test_resizes_bilinearly_to_height_and_width():
    # output pixel j samples input x = (j + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1]
    result = model_input(np.array([[0, 255]], np.uint8), (1, 4), 2)
    assert result.shape == (1, 4, 2)
    np.testing.assert_allclose(result[0, :, 1], [0.0, 0.25, 0.75, 1.0])


def test_refuses_float_images():
    with pytest.raises(ValueError, match="stored images are uint8 or uint16, got float32"):
        model_input(np.zeros((2, 2), np.float32), (2, 2), 1)
