"""Classical image codecs behind one small :class:`~sinco.baselines.classical.Codec` interface."""
