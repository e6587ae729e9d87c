"""What the user already has: credentials and base URLs in the icav2 CLI's conventions.

`api` (the entry points), `search` (the steps, in order), `files` (the CLI's YAML files). It
knows no manager and no store: `TokenManager.from_environment` calls it. Imports the value
modules and `_wire` (tests/test_layers.py).
"""
