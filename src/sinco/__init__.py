"""sinco: medical image compression with implicit neural representations (INRs).

The package imports nothing heavy at import time; the sub-packages hold the pieces:

- :mod:`sinco.inr`: coordinate grids, positional encoding, SIREN and PE-MLP networks, rate sizing.
- :mod:`sinco.codec`: fp16 quantisation, the ``.sinco`` bitstream, compress/decompress.
- :mod:`sinco.fit`: the fitting loop and its configuration.
- :mod:`sinco.data`: reading slices from NIfTI, NumPy, PNG and TIFF; writing outputs.
- :mod:`sinco.metrics`: PSNR, SSIM and Dice.
"""

__version__ = "0.1.0"
