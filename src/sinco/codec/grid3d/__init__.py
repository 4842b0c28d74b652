"""The volume latent-grid family (``--arch grid3d``): a slab of slices coded as one volume, the ``grid`` family's
networks and fixed-point arithmetic over latent grids ``(slices, H, W)``, with an entropy model whose context reaches
into the previous slice."""
