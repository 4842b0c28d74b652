"""``sinco benchmark``: methods and labels (:mod:`~sinco.benchmark.methods`), the configuration
(:mod:`~sinco.benchmark.config`), the runner (:mod:`~sinco.benchmark.runner`), results on disk
(:mod:`~sinco.benchmark.results`), tables, figures, Bjontegaard deltas and the lambda frontier. The core
(:mod:`sinco.codec`, :mod:`sinco.compression`) never imports this package."""
