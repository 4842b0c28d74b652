"""The paper's INR families (``--arch siren`` and ``--arch pe-mlp``): a coordinate network overfitted to one image,
its fp16 weights the payload.

One module per component: :mod:`~.spec` (the architecture, the family block's content), :mod:`~.config` (fitting
settings and presets), :mod:`~.encodings` (coordinates, positional encoding), :mod:`~.networks` (SIREN, PE-MLP),
:mod:`~.sizing` (width for a rate), :mod:`~.training` (the batched fitting loop), :mod:`~.payload` (fp16 bytes)
and :mod:`~.family` (the registry's adapters). Nothing is imported here, so reading the adapters does not import
torch.
"""
