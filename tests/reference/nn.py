"""References for the layer tests: the PyTorch twin of a fastconv model, and finite differences."""

import numpy as np


def torch_layer(layer, torch):
    """The ``torch.nn`` module equivalent to one fastconv layer (same hyper-parameters)."""
    from fastconv import nn

    tnn = torch.nn
    if isinstance(layer, nn.Sequential):
        return tnn.Sequential(*[torch_layer(child, torch) for child in layer])
    if isinstance(layer, nn.Conv2d):
        padding = layer.padding
        if isinstance(padding, tuple) and isinstance(padding[0], tuple):
            raise ValueError("PyTorch's Conv2d has no asymmetric padding")
        return tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                          stride=layer.stride, padding=padding, dilation=layer.dilation,
                          groups=layer.groups, bias=layer.bias is not None,
                          padding_mode=layer.padding_mode)
    if isinstance(layer, nn.Linear):
        return tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    if isinstance(layer, nn.MaxPool2d):
        return tnn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                             ceil_mode=layer.ceil_mode)
    if isinstance(layer, nn.AvgPool2d):
        return tnn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding,
                             ceil_mode=layer.ceil_mode,
                             count_include_pad=layer.count_include_pad,
                             divisor_override=layer.divisor_override)
    if isinstance(layer, nn.Flatten):
        return tnn.Flatten(layer.start_dim, layer.end_dim)
    simple = {nn.ReLU: tnn.ReLU, nn.Sigmoid: tnn.Sigmoid, nn.Tanh: tnn.Tanh}
    for ours, theirs in simple.items():
        if isinstance(layer, ours):
            return theirs()
    raise TypeError(f"no PyTorch twin for {type(layer).__name__}")


def torch_twin(model, torch):
    """A float64 PyTorch model with ``model``'s structure and weights."""
    twin = torch_layer(model, torch).double()
    state = {key: torch.from_numpy(value.astype(np.float64))
             for key, value in model.state_dict().items()}
    twin.load_state_dict(state)
    return twin


def numerical_gradient(function, array, eps=1e-6, count=None, rng=None):
    """Central differences of the scalar ``function()`` w.r.t. entries of ``array`` (in place).

    With ``count``, only that many random entries are probed; returns (indices, gradients).
    """
    flat = array.reshape(-1)
    if count is None or count >= flat.size:
        indices = np.arange(flat.size)
    else:
        indices = (rng or np.random.default_rng(0)).choice(flat.size, count, replace=False)
    gradients = np.empty(indices.size)
    for position, index in enumerate(indices):
        saved = flat[index]
        flat[index] = saved + eps
        plus = function()
        flat[index] = saved - eps
        minus = function()
        flat[index] = saved
        gradients[position] = (plus - minus) / (2 * eps)
    return indices, gradients
