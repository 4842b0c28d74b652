"""Compression: an image (:mod:`~sinco.compression.image`), the slices of a volume (:mod:`~sinco.compression.volume`), an
archive on a Dask cluster (:mod:`~sinco.compression.batch`), the measurements of every output
(:mod:`~sinco.compression.measure`) and the JSON record saved beside it (:mod:`~sinco.compression.records`)."""
