"""The release, in one place: hatch reads it for the build's metadata, and
`aioica_auth.__version__`, `aioica-auth --version` and the OpenTelemetry scope print it. A
release moves CHANGELOG.md's `[Unreleased]` into a dated entry of this version."""

__version__ = "0.2.0"
