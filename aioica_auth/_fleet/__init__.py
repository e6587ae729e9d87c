"""One token request per refresh across processes and hosts: the `TokenStore` protocol, the
file and Redis stores, and `SharedSource`, a token source that shares through a store.

Imports the value modules and `_lifecycle` (tests/test_layers.py).
"""
