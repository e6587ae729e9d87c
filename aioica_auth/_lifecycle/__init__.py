"""The engine: a token's timing and state, renewal, backoff, and the callers' bounded waits.

It knows no URL, no store and no adapter; the sources build the `_wire` APIs they call.
Imports the value modules and `_wire` (tests/test_layers.py).
"""
