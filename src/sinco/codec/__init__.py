"""Encoding and decoding bytes: the ``.sinco`` container (:mod:`~sinco.codec.format`), files of any codec family
(:mod:`~sinco.codec.files`), volume files (:mod:`~sinco.codec.volume`), the interface every family implements
(:mod:`~sinco.codec.family`), the registry (:mod:`~sinco.codec.registry`) and the families, one package each
(:mod:`~sinco.codec.inr`, :mod:`~sinco.codec.grid`)."""
