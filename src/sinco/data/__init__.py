"""Image input and output: slices from NIfTI, NumPy, PNG and TIFF files; intensity scaling."""
