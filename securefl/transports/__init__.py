"""Transports move protocol messages between clients and the server."""
