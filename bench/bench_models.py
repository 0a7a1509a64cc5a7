"""Whole small models, eval-mode forward: fastconv against PyTorch eager and ONNX Runtime.

The tutorial network and LeNet-5 (``fastconv.models``) at batch 1, 64 and 1000. PyTorch gets
the same weights (``state_dict`` round trip); ONNX Runtime runs the PyTorch model exported to
ONNX (the legacy TorchScript exporter, weights as constants, all graph optimisations on, so
MLAS fuses Conv+ReLU and picks its NCHWc kernels). Every contender gets a NumPy batch and
returns a NumPy array; their outputs are compared once before timing.

    python bench/bench_models.py                         # both models, batch 1, 64, 1000
    python bench/bench_models.py --models seed --batches 64 --repeats 11 --threads 2
    python bench/bench_models.py --layers     # also each layer's own forward, unfused

Timing as in ``fastconv.benchmark``: contenders interleaved in blocks, a pause before each
block (idle OpenMP/ORT threads spin and would be charged to the next contender), medians.
``fc/torch`` and ``fc/ort`` are fastconv's time over theirs (below 1: fastconv is faster).
Needs torch and ``pip install "fastconv[bench]"`` (onnx, onnxruntime).
"""

import argparse
import io
import json
import platform
import sys

import numpy as np

from _checkout import use_built_checkout

use_built_checkout()

import fastconv  # noqa: E402
from fastconv import models  # noqa: E402
from fastconv.benchmark import _median_times, ort_runner  # noqa: E402

TORCH_LAYERS = {
    "Conv2d": lambda tnn, m: tnn.Conv2d(m.in_channels, m.out_channels, m.kernel_size,
                                        stride=m.stride, padding=m.padding,
                                        dilation=m.dilation, groups=m.groups,
                                        bias=m.bias is not None),
    "Linear": lambda tnn, m: tnn.Linear(m.in_features, m.out_features, bias=m.bias is not None),
    "ReLU": lambda tnn, m: tnn.ReLU(),
    "Sigmoid": lambda tnn, m: tnn.Sigmoid(),
    "Tanh": lambda tnn, m: tnn.Tanh(),
    "Flatten": lambda tnn, m: tnn.Flatten(),
    "MaxPool2d": lambda tnn, m: tnn.MaxPool2d(m.kernel_size, m.stride, m.padding),
    "AvgPool2d": lambda tnn, m: tnn.AvgPool2d(m.kernel_size, m.stride, m.padding),
}


def torch_twin(torch, model):
    """The PyTorch Sequential with ``model``'s layers and weights, in eval mode."""
    layers = [TORCH_LAYERS[type(layer).__name__](torch.nn, layer) for layer in model]
    twin = torch.nn.Sequential(*layers)
    twin.load_state_dict({key: torch.from_numpy(np.ascontiguousarray(value))
                          for key, value in model.state_dict().items()})
    return twin.eval()


def onnx_export(torch, twin, batch):
    import warnings

    buffer = io.BytesIO()
    example = torch.zeros((batch, 1, 28, 28))
    with warnings.catch_warnings():  # the legacy exporter says it is legacy; it suits here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(twin, (example,), buffer, input_names=["x"], output_names=["y"],
                          dynamo=False, opset_version=17)
    import onnx

    return onnx.load_from_string(buffer.getvalue())


def contenders(name, batch, threads, torch, layers=False):
    model = models.build(name, seed=0)
    model.eval()
    x = np.random.default_rng(batch).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    expected = model(x)
    result = {"fastconv": lambda: model(x)}
    if layers:
        def layerwise():  # what Sequential did before fusion and prepared plans
            h = x
            for layer in model:
                h = layer(h)
            return h

        result["layers"] = layerwise
    if torch is not None:
        twin = torch_twin(torch, model)
        x_t = torch.from_numpy(x)

        def torch_forward():
            with torch.inference_mode():
                return twin(x_t).numpy()

        result["torch"] = torch_forward
        try:
            result["ort"] = ort_runner(onnx_export(torch, twin, batch), {"x": x}, threads)
        except ImportError:
            pass
    for who, fn in result.items():
        got = fn()
        if not np.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max())):
            raise RuntimeError(f"{who} disagrees with fastconv on {name} at batch {batch}")
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["seed", "lenet"],
                        choices=sorted(models.MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64, 1000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--layers", action="store_true",
                        help="also time fastconv layer by layer (no fusion, no prepared plan)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        torch = None
        print("(torch is not installed: fastconv only)", file=sys.stderr)
    if torch is not None:
        torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    print(f"fastconv {fastconv.__version__}, float32, eval forward, {args.threads} threads, "
          f"median over {args.repeats}+ interleaved rounds of 5 calls")
    header = (f"{'model':<8}{'batch':>6}{'fastconv ms':>13}{'torch ms':>10}{'ort ms':>9}"
              f"{'fc/torch':>10}{'fc/ort':>8}" + (f"{'layers ms':>11}" if args.layers else ""))
    print(header)
    print("-" * len(header))
    rows = []
    with fastconv.threads(args.threads), threadpool_limits(limits=args.threads):
        for name in args.models:
            for batch in args.batches:
                medians = _median_times(contenders(name, batch, args.threads, torch,
                                                   args.layers),
                                        args.repeats, args.min_seconds)
                row = {"model": name, "batch": batch, "threads": args.threads,
                       **{f"{who}_ms": seconds * 1e3 for who, seconds in medians.items()}}
                for who in ("torch", "ort"):
                    if who in medians:
                        row[f"fastconv_over_{who}"] = medians["fastconv"] / medians[who]
                rows.append(row)

                def cell(key, width, fmt):
                    value = row.get(key)
                    return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"

                print(f"{name:<8}{batch:>6}{cell('fastconv_ms', 13, '.3f')}"
                      f"{cell('torch_ms', 10, '.3f')}{cell('ort_ms', 9, '.3f')}"
                      f"{cell('fastconv_over_torch', 10, '.3f')}"
                      f"{cell('fastconv_over_ort', 8, '.3f')}"
                      + (cell('layers_ms', 11, '.3f') if args.layers else ""), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rows": rows, "machine": platform.platform()}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
