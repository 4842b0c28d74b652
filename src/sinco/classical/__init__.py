"""The classical codecs sinco measures itself against: the interface (:mod:`~sinco.classical.base`), the still-image
codecs (:mod:`~sinco.classical.images`) and the registry (:mod:`~sinco.classical.registry`)."""
