"""Inspectors: one module per question the agent answers (sockets, processes, routes, ...).

Each separates pure parsing (bytes or text in, records out) from the I/O that feeds it.
"""
