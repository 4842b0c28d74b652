"""The codec: fp16 quantisation, the ``.sinco`` bitstream, and compress/decompress."""
