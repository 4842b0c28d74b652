"""Encoding and decoding bytes: the ``.sinco`` container (:mod:`~sinco.codec.format`), files of any codec family
(:mod:`~sinco.codec.files`), the families themselves (:mod:`~sinco.codec.families`), quantisers and volume files."""
