"""pad2d / pad2d_backward with 2-D input and negative (cropping) padding, against NumPy
slicing and PyTorch."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import pad2d, pad2d_backward
from reference.pad import pad2d_reference

MODES = ["constant", "reflect", "replicate", "circular"]


def _crop_reference(x, signed, mode):
    """PyTorch's order: pad the positive sides (from the whole input), then crop; circular
    crops first and wraps around what is left."""
    positive = tuple(max(side, 0) for side in signed)
    top, bottom, left, right = (max(-side, 0) for side in signed)

    def crop(a):
        return a[..., top:a.shape[-2] - bottom, left:a.shape[-1] - right]

    if mode == "circular":
        return pad2d_reference(crop(x), positive, mode)
    return crop(pad2d_reference(x, positive, mode))


@st.composite
def cases(draw):
    mode = draw(st.sampled_from(MODES))
    height, width = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    signed = []
    for size in (height, width):
        # crops leave at least one row and column
        crop_before = draw(st.integers(0, size - 1))
        crop_after = draw(st.integers(0, size - 1 - crop_before))
        left = size - crop_before - crop_after  # what circular wraps around
        limit = size - 1 if mode == "reflect" else left if mode == "circular" else 3
        for crop in (crop_before, crop_after):
            signed.append(-crop if crop or draw(st.booleans()) else draw(st.integers(0, limit)))
    return mode, (height, width), tuple(signed)


@settings(max_examples=40)
@given(case=cases(), seed=st.integers(0, 2**32 - 1), ndim=st.sampled_from([2, 3, 4]))
def test_negative_padding_and_planes_match_reference(case, seed, ndim):
    mode, size, signed = case
    rng = np.random.default_rng(seed)
    shape = ((2, 3) + size)[4 - ndim:]
    x = rng.standard_normal(shape)
    padding = ((signed[0], signed[1]), (signed[2], signed[3]))
    x4 = x.reshape((1,) * (4 - ndim) + shape)
    expected = _crop_reference(x4, signed, mode).reshape(
        shape[:-2] + (size[0] + signed[0] + signed[1], size[1] + signed[2] + signed[3]))
    out = pad2d(x, padding, mode=mode)
    np.testing.assert_array_equal(out, expected)
    # the gradient: the adjoint of a linear map, <gy, pad(x)> = <pad*(gy), x>
    grad_output = rng.standard_normal(out.shape)
    grad_input = pad2d_backward(grad_output, padding, mode=mode)
    assert grad_input.shape == x.shape
    np.testing.assert_allclose(np.vdot(grad_output, out), np.vdot(grad_input, x), rtol=1e-10,
                               atol=1e-10)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("signed", [(1, -2, -1, 2), (-1, -1, 2, -3), (0, -3, -4, 0),
                                    (-2, 1, 1, -1)])
def test_matches_torch(mode, signed):
    torch = pytest.importorskip("torch")
    x = np.arange(40.0).reshape(2, 1, 4, 5)
    padding = ((signed[0], signed[1]), (signed[2], signed[3]))
    torch_padding = (signed[2], signed[3], signed[0], signed[1])
    tx = torch.tensor(x, requires_grad=True)
    t_out = torch.nn.functional.pad(tx, torch_padding, mode=mode)
    np.testing.assert_array_equal(pad2d(x, padding, mode=mode), t_out.detach().numpy())
    grad_output = np.random.default_rng(0).standard_normal(t_out.shape)
    t_out.backward(torch.from_numpy(grad_output))
    np.testing.assert_allclose(pad2d_backward(grad_output, padding, mode=mode),
                               tx.grad.numpy(), rtol=1e-12)


def test_two_d_constant_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    out = pad2d(x, ((1, -1), (2, 0)), value=7.0)
    expected = torch.nn.functional.pad(torch.from_numpy(x), (2, 0, 1, -1), value=7.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, expected.numpy())


def test_crop_errors():
    with pytest.raises(ValueError, match="crops more than"):
        pad2d(np.ones((2, 3)), ((-2, -1), (0, 0)))
    with pytest.raises(TypeError, match="must hold ints"):
        pad2d(np.ones((2, 3)), ((-1.5, 0), (0, 0)))
    with pytest.raises(ValueError, match="2-D, 3-D or 4-D|4-D"):
        pad2d(np.ones(3), 1)
