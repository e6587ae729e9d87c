"""How you test your own code with aioica_auth.testing: this file tests examples/uploader.py.

Run it with `python -m pytest examples/test_uploader.py`; in your project, opt in to the
fixtures from your top-level conftest.py instead of the line below.
"""

from __future__ import annotations

from uploader import upload_all

from aioica_auth import ApiKey, TokenManager

pytest_plugins = ["aioica_auth.testing.pytest_plugin"]


async def test_upload_survives_short_tokens_and_a_flaky_token_endpoint(ica_server_factory):
    """Tokens of 1 s, a throttled first mint and random 5xx: every part lands (a request
    whose token expired on the way, during a renewal retry, is resent by the middleware)."""
    server = await ica_server_factory(lifetime=1.0, latency=0.02)
    server.inject("ica.create", status=429, retry_after="1")
    server.random_faults(endpoints=["ica.create"], rate_5xx=0.2, seed=7)
    manager = TokenManager.for_ica(ApiKey(server.api_key), base_url=server.ica_base_url)
    async with manager:
        statuses = await upload_all(manager, server.ica_base_url, parts=3000)
    assert statuses == [200] * 3000  # no 401 reached the uploader
    assert server.counts["ica.create"] >= 2  # it outlived its first token


async def test_upload_with_a_wrong_key_fails_loudly(ica_server):
    """A wrong API key surfaces as TokenUnavailableError, not as silent 401s."""
    import pytest

    from aioica_auth import TokenUnavailableError

    manager = TokenManager.for_ica(ApiKey("not-my-key-000"), base_url=ica_server.ica_base_url)
    async with manager:
        with pytest.raises(TokenUnavailableError):
            await upload_all(manager, ica_server.ica_base_url, parts=10)
    assert ica_server.counts["resource"] == 0
