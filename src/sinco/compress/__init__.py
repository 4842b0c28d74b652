"""Compression: an image (:mod:`~sinco.compress.image`), the slices of a volume (:mod:`~sinco.compress.volume`), an
archive on a Dask cluster (:mod:`~sinco.compress.batch`), the measurements of every output
(:mod:`~sinco.compress.measure`) and the JSON record saved beside it (:mod:`~sinco.compress.records`)."""
