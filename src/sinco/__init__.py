"""sinco: medical image compression with implicit neural representations (INRs).

The package imports nothing heavy at import time; the sub-packages hold the pieces:

- :mod:`sinco.inr`: coordinate grids, positional encoding, SIREN and PE-MLP networks, rate sizing.
- :mod:`sinco.codec`: the ``.sinco`` container, the codec families and their registry, volume files.
- :mod:`sinco.pipeline`: compressing an image or a volume with any family, measured on the decoded file.
- :mod:`sinco.fit`: the fitting loop and its configuration.
- :mod:`sinco.data`: reading slices from NIfTI, NumPy, PNG and TIFF; writing outputs.
- :mod:`sinco.metrics`: PSNR, SSIM and Dice.
"""

__version__ = "0.2.0"
