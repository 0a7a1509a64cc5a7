"""Where one training step of LeNet-5 (or the tutorial network) spends its time, layer by layer
and op by op, fastconv against PyTorch on the same shapes and weights.

Each row times one piece of ``train.fit``'s step alone, on the arrays the step hands it
(taken from a real forward/backward pass of batch ``--batch``): the forward of each step of
``Sequential`` (a Conv2d with its ReLU fused, as ``Sequential`` runs it), the loss, each
layer's backward, a convolution's backward split into input, weight and bias gradients
(``conv2d_backward(need=...)`` / ``aten.convolution_backward`` with an output mask), zero_grad
and the SGD step. PyTorch's rows: the same module called on a tensor that requires grad
(forward), and ``torch.autograd.backward`` of that module's output alone (backward; the
forward is re-run untimed before each call). Medians over ``--rounds`` rounds, fastconv and
PyTorch alternating within a round, each timing the mean of ``--inner`` calls. The sum of the
rows is not the step: a real step also pays the Python between them (``fit``'s loop, batch
preparation, the scheduler), shown as "whole step" at the end.

    python bench/profile_train.py --model lenet --threads 2
"""

import argparse
import statistics
import sys
import time

import numpy as np

from _checkout import use_built_checkout

use_built_checkout()

import fastconv  # noqa: E402
from fastconv import models, nn, optim  # noqa: E402
from fastconv.conv import conv2d_backward  # noqa: E402
from fastconv._fusion import fused_groups  # noqa: E402


def timer(function, inner):
    def run():
        start = time.perf_counter()
        for _ in range(inner):
            function()
        return (time.perf_counter() - start) / inner
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["seed", "lenet"], default="lenet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--inner", type=int, default=20)
    args = parser.parse_args()
    import torch
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from bench_train import torch_model

    fastconv.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, args.batch)
    model = models.build(args.model, seed=0)
    tmodel = torch_model(torch, args.model, model.state_dict())
    loss = nn.CrossEntropyLoss()
    tloss = torch.nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    toptimizer = torch.optim.SGD(tmodel.parameters(), lr=0.05, momentum=0.9)
    layers = list(model)
    tlayers = list(tmodel)
    groups = fused_groups(layers)

    # one real pass: each step's input, and the gradient each layer's backward receives
    inputs, tinputs = [], []
    h = x
    for start, stop in groups:
        inputs.append(h)
        h = (layers[start]._forward_relu(h, layers[start + 1]) if stop - start == 2
             else layers[start](h))
    output = h
    value = loss(output, y)
    grads = {}
    g = loss.backward()
    for index in range(len(layers) - 1, -1, -1):
        grads[index] = g
        g = layers[index].backward(g) if index else layers[0].backward(g, need_input_grad=False)
    th = torch.from_numpy(x)
    for layer in tlayers:
        tinputs.append(th)
        th = layer(th).detach()

    rows = {}  # name -> (fastconv callable, torch callable or None)

    def add(name, fc, tc):
        rows[name] = (fc, tc)

    # forward, by Sequential's step
    for (start, stop), step_input in zip(groups, inputs):
        names = "+".join(type(layers[i]).__name__ for i in range(start, stop))
        if stop - start == 2:
            def fc(start=start, step_input=step_input):
                layers[start]._forward_relu(step_input, layers[start + 1])
        else:
            def fc(start=start, step_input=step_input):
                layers[start](step_input)
        tin = tinputs[start].clone().requires_grad_(start > 0)

        def tc(start=start, stop=stop, tin=tin):
            out = tin
            for i in range(start, stop):
                out = tlayers[i](out)
        add(f"fwd {start}:{names} {tuple(step_input.shape[1:])}", fc, tc)
    tout = torch.from_numpy(output).requires_grad_(True)
    ty = torch.from_numpy(y)
    add("fwd loss", lambda: loss(output, y), lambda: tloss(tout, ty))
    loss(output, y)

    def tloss_backward():
        value = tloss(tout, ty)
        return lambda: torch.autograd.backward(value)
    add("bwd loss", loss.backward, ("rebuild", tloss_backward))

    # backward, layer by layer (the forward of the layer redone untimed for torch)
    for index in range(len(layers) - 1, -1, -1):
        layer, tlayer = layers[index], tlayers[index]
        name = type(layer).__name__
        g = grads[index]
        tg = torch.from_numpy(np.ascontiguousarray(g))
        tin = tinputs[index].clone().requires_grad_(index > 0)

        def rebuild(tlayer=tlayer, tin=tin, tg=tg):
            out = tlayer(tin)
            return lambda: torch.autograd.backward(out, tg)
        if isinstance(layer, nn.Conv2d):
            h_in = inputs[[s for s, _ in groups].index(index)]
            geometry = (layer.stride, layer.padding)
            needs = [("bias", (False, False, True)), ("weight", (False, True, False))]
            if index:
                needs.insert(0, ("input", (True, False, False)))
            for need, mask in needs:
                def fc(g=g, h_in=h_in, layer=layer, need=need):
                    conv2d_backward(g, h_in, layer.weight.data, layer.stride, layer.padding,
                                    need=(need,))
                weight = tlayer.weight.detach()
                tx = torch.from_numpy(h_in)

                def tc(tg=tg, tx=tx, weight=weight, tlayer=tlayer, mask=mask):
                    torch.ops.aten.convolution_backward(
                        tg, tx, weight, [weight.shape[0]], list(tlayer.stride),
                        list(tlayer.padding), list(tlayer.dilation), False, [0, 0],
                        tlayer.groups, list(mask))
                add(f"bwd {index}:{name} {need} {tuple(g.shape[1:])} {geometry}", fc, tc)
            add(f"bwd {index}:{name} whole", (lambda layer=layer, g=g, index=index:
                                               layer.backward(g, need_input_grad=index > 0)),
                ("rebuild", rebuild))
        elif isinstance(layer, nn.Linear):
            add(f"bwd {index}:{name} {layer.in_features}->{layer.out_features}",
                lambda layer=layer, g=g: layer.backward(g), ("rebuild", rebuild))
        else:
            add(f"bwd {index}:{name} {tuple(g.shape[1:])}", lambda layer=layer, g=g:
                layer.backward(g), ("rebuild", rebuild))
    # every parameter has a gradient now, on both sides
    tmodel.zero_grad(set_to_none=False)
    out = tmodel(torch.from_numpy(x))
    tloss(out, ty).backward()
    add("zero_grad", optimizer.zero_grad, lambda: toptimizer.zero_grad(set_to_none=False))
    add("SGD step", optimizer.step, toptimizer.step)

    def fc_step():
        out = model(x)
        loss(out, y)
        optimizer.zero_grad()
        model.backward(loss.backward(), need_input_grad=False)
        optimizer.step()

    tx_full = torch.from_numpy(x)

    def tc_step():
        toptimizer.zero_grad()
        tloss(tmodel(tx_full), ty).backward()
        toptimizer.step()
    add("whole step (model, loss, backward, step)", fc_step, tc_step)

    times = {name: ([], []) for name in rows}
    for round_index in range(args.rounds):
        for name, (fc, tc) in rows.items():
            sides = [(0, fc), (1, tc)]
            if round_index % 2:
                sides.reverse()
            for side, function in sides:
                if isinstance(function, tuple):  # torch backward: forward redone, untimed
                    total = 0.0
                    for _ in range(args.inner):
                        call = function[1]()
                        start = time.perf_counter()
                        call()
                        total += time.perf_counter() - start
                    times[name][side].append(total / args.inner)
                else:
                    function()
                    times[name][side].append(timer(function, args.inner)())
    print(f"{args.model}, batch {args.batch}, {args.threads} thread(s); medians over "
          f"{args.rounds} rounds of {args.inner} calls; fastconv {fastconv.__version__}, "
          f"torch {torch.__version__}")
    print(f"{'':62s} {'fastconv ms':>11s} {'torch ms':>9s} {'ratio':>6s} {'diff ms':>8s}")
    for name, (fc_times, tc_times) in times.items():
        fc_ms = 1e3 * statistics.median(fc_times)
        tc_ms = 1e3 * statistics.median(tc_times)
        print(f"{name:62s} {fc_ms:11.4f} {tc_ms:9.4f} {fc_ms / tc_ms:6.2f} "
              f"{fc_ms - tc_ms:8.4f}")


if __name__ == "__main__":
    main()
