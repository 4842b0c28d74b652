"""Fitting an INR to one image: configuration and the optimisation loop."""
