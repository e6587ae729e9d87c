"""A local ICA-compatible token server for tests: `LocalIcaServer`, `make_jwt`, faults.

Runs the ICA v2 and console v1 token endpoints (ICA-API.md to the letter) on loopback with
real JWTs, configurable lifetimes, latency and clock skew, psToken sessions, revocation, a
protected resource that checks the bearer, per-endpoint counters and fault injection::

    from aioica_auth.testing import LocalIcaServer

    async with LocalIcaServer(lifetime=2.0) as server:
        server.inject("ica.create", status=429, retry_after="1")
        ...  # point the code under test at server.ica_base_url / server.base_url
        assert server.counts["ica.create"] == 2
"""

from __future__ import annotations

from ._faults import Fault, RecordedRequest
from ._jwt import make_jwt
from ._server import LocalIcaServer

__all__ = ["Fault", "LocalIcaServer", "RecordedRequest", "make_jwt"]
