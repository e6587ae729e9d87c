"""The wire: one request helper and one method per token endpoint; it knows no schedule.

`urls` (where requests go), `answers` (what came back, as typed errors and models), `core`
(`HttpCore`, `Reply`, `TokenEndpoints`), `transport` (why no answer came), `ica` and
`console` (the two APIs). Imports only the value modules (tests/test_layers.py).
"""
