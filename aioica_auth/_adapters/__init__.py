"""The bearer on other clients' requests (the aiohttp middleware, the httpx auth), with one set
of rules for a 401 (`recovery`).

Imports the value modules, `_lifecycle`, and `_wire`'s HTTP helpers (tests/test_layers.py).
"""
