"""Serving: the KServe predictor of every variant, tensor codecs, forecast jobs by reference, the client."""
