"""The PE-MLP's forward and backward over blocks of pixel rows, for fitting on the CPU.

A PE-MLP at the paper's rates is narrow (width 20) and evaluated on every pixel of the slice at once:
each layer's activations ``(N, 20)`` are 4.6 MB for a 240 x 240 slice, and the whole step's working set
(encoding, six activations, their gradients) is larger than the CPU's caches. The step is then bound by
memory traffic (ReLU and its backward, skinny matrix products), not by arithmetic. Running every layer
on :data:`BLOCK_ROWS` pixels at a time, forward and then backward, keeps a block's activations in cache;
the weight gradients are accumulated block by block. The result is the autograd gradient up to float
summation order (tested against it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

#: Pixels per block: measured on a 2-core EPYC (1 MB L2 a core), 8192 rows fit a block's activations
#: in cache while keeping the per-block Python overhead small.
BLOCK_ROWS = 8192


class _BlockedPEMLP(torch.autograd.Function):
    """Autograd function: ``(feats, w_0, b_0, ..., w_head, b_head) -> (N, 1)``; see :func:`pe_mlp_blocked`."""

    @staticmethod
    def forward(ctx, feats: torch.Tensor, skips: frozenset[int], *params: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        weights, biases = params[0:-2:2], params[1:-2:2]
        n = feats.shape[0]
        acts = [feats.new_empty(n, w.shape[0]) for w in weights]
        out = feats.new_empty(n, 1)
        for lo in range(0, n, BLOCK_ROWS):
            block = feats[lo : lo + BLOCK_ROWS]
            x = block
            for index, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
                y = acts[index][lo : lo + BLOCK_ROWS]
                if index in skips:
                    # [x, feats] W^T + b without materializing the concatenation.
                    width = x.shape[1]
                    torch.addmm(bias, x, weight[:, :width].t(), out=y)
                    y.addmm_(block, weight[:, width:].t())
                else:
                    torch.addmm(bias, x, weight.t(), out=y)
                x = y.clamp_(min=0)
            torch.addmm(params[-1], x, params[-2].t(), out=out[lo : lo + BLOCK_ROWS])
        ctx.skips, ctx.n_layers = skips, len(weights)
        ctx.save_for_backward(feats, *acts, *params)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: ANN001
        saved = ctx.saved_tensors
        feats, acts, params = saved[0], saved[1 : 1 + ctx.n_layers], saved[1 + ctx.n_layers :]
        weights, head = params[0:-2:2], params[-2]
        grad_w = [torch.zeros_like(w) for w in weights]
        grad_b = [torch.zeros_like(b) for b in params[1:-2:2]]
        grad_out = grad_out.contiguous()
        grad_head_w, grad_head_b = grad_out.t().mm(acts[-1]), grad_out.sum(0)
        for lo in range(0, feats.shape[0], BLOCK_ROWS):
            block = feats[lo : lo + BLOCK_ROWS]
            grad = grad_out[lo : lo + BLOCK_ROWS].mm(head)
            for index in range(ctx.n_layers - 1, -1, -1):
                grad = torch.ops.aten.threshold_backward(grad, acts[index][lo : lo + BLOCK_ROWS], 0)
                x = acts[index - 1][lo : lo + BLOCK_ROWS] if index > 0 else block
                weight = weights[index]
                if index in ctx.skips:
                    width = x.shape[1]
                    grad_w[index][:, :width].addmm_(grad.t(), x)
                    grad_w[index][:, width:].addmm_(grad.t(), block)
                    weight = weight[:, :width]
                else:
                    grad_w[index].addmm_(grad.t(), x)
                grad_b[index].add_(grad.sum(0))
                if index > 0:
                    grad = grad.mm(weight)
        grads: list[torch.Tensor] = []
        for w, b in zip(grad_w, grad_b, strict=True):
            grads += [w, b]
        return (None, None, *grads, grad_head_w, grad_head_b)


def pe_mlp_blocked(feats: torch.Tensor, params: Sequence[torch.Tensor], *, skips: Sequence[int]) -> torch.Tensor:
    """A PE-MLP's output on precomputed features, its backward run block by block.

    Args:
        feats: the positional encoding of every pixel ``(N, F)``, float32.
        params: the network's parameters in :meth:`torch.nn.Module.named_parameters` order: each hidden layer's
            weight ``(width, fan_in)`` and bias ``(width,)``, then the head's weight ``(1, width)`` and bias ``(1,)``.
        skips: hidden layers (0-based) that take the encoding again beside the previous layer's output.

    Returns:
        The intensities ``(N, 1)``, differentiable with respect to ``params``.

    Example::

        >>> from sinco.codec.inr.networks import build_inr
        >>> from sinco.codec.inr.spec import INRSpec
        >>> spec = INRSpec(arch="pe-mlp", width=8, depth=3, n_freqs=4, skips=(2,))
        >>> net = build_inr(spec)
        >>> feats = net.features(torch.rand(100, 2) * 2 - 1)
        >>> pe_mlp_blocked(feats, list(net.parameters()), skips=spec.skips).shape
        torch.Size([100, 1])
    """
    return _BlockedPEMLP.apply(feats.contiguous(), frozenset(skips), *params)
