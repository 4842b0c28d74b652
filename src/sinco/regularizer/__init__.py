"""The SINCO structural regularizer: the data terms (:mod:`~sinco.regularizer.terms`), the loss with its frozen
segmentation network (:mod:`~sinco.regularizer.loss`) and the independent judge (:mod:`~sinco.regularizer.judge`)."""
