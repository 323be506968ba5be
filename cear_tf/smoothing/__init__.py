"""Randomized smoothing of an ensemble: noise streams, aggregators, the engine and the CERTIFY / PREDICT decisions, the served model."""
