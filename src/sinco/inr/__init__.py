"""Implicit neural representations: coordinate grids, encodings, networks and rate sizing."""
