"""The latent-grid codec family (``--arch grid``, Cool-chic / C3 style): multi-resolution integer latents, a small
synthesis network and an auto-regressive entropy model, all coded into one payload that decodes bit-exactly.

One module per component: :mod:`~.spec` (decoder hyper-parameters, the family block), :mod:`~.config` (fitting
settings and presets), :mod:`~.networks` (the decoder's tensors), :mod:`~.arm`, :mod:`~.synthesis`,
:mod:`~.upsampling`, :mod:`~.numerics` (fixed point), :mod:`~.entropy` (the latents' Laplace model),
:mod:`~.forward` (the float forward pass), :mod:`~.quantizer`, :mod:`~.training`, :mod:`~.rate_search`,
:mod:`~.residual`, :mod:`~.prior`, :mod:`~.payload` (bytes) and :mod:`~.family` (the registry's adapter).
Nothing is imported here, so reading the adapter does not import torch.
"""
