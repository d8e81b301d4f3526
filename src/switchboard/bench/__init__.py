"""Benchmarks: the protocol codec on its own (``protocol_codec``) and the server under load."""
