"""The `aioica-auth` command line (entry point `aioica_auth._cli:main`)."""

from .main import main

__all__ = ["main"]
