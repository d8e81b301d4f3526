"""Switchboard: a small messaging server and toolkit with its own binary protocol."""

__version__ = "0.1.0"
