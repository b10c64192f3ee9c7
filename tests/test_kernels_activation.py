import numpy as np
import pytest

from nodecheck import check_op


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu(rng, dtype):
    check_op("Relu", {"x": rng.standard_normal((2, 3, 4)).astype(dtype)})
