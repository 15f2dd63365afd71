"""Extractors: land source data in the raw zone before anything else touches it."""
