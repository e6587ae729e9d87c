"""Sphinx configuration of the aioica_auth docs site.

Build it from the checkout's root with warnings as errors (the docs extra installs the tools):

    python -m sphinx -W -b html docs docs/_build/html

Cross-links to Python, aiohttp, httpx and attrs come from inventories kept in the repository
(`docs/_inventories/`, written by `make.py` there), since CI reaches no docs site.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, installed or not

from aioica_auth import __version__  # noqa: E402

project = "aioica_auth"
author = "aioica_auth developers"
copyright = "aioica_auth developers"
release = __version__
version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_inventories"]

# MyST: `{directive}` fences, `[text](page.md#anchor)` links to headings down to level 3.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc reads the Google-style docstrings through napoleon; signatures carry the types.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True}  # bases: on the exceptions only (api.md)
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# The inventories in the repository, never a download.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", "_inventories/python.inv"),
    "aiohttp": ("https://docs.aiohttp.org/en/stable/", "_inventories/aiohttp.inv"),
    "httpx": ("https://www.python-httpx.org/", "_inventories/httpx.inv"),
    "attrs": ("https://www.attrs.org/en/stable/", "_inventories/attrs.inv"),
}

html_theme = "furo"
html_title = f"aioica_auth {__version__}"

# The docstrings write code as `name`, Markdown's way: show it as code, not as a title.
default_role = "code"


def _public_name(target: str) -> str | None:
    """`aioica_auth._wire.ica.IcaTokenApi` -> `aioica_auth.IcaTokenApi` when that is public;
    `aiohttp.client.ClientSession` -> `aiohttp.ClientSession` (as aiohttp documents it)."""
    import aioica_auth
    import aioica_auth.testing

    head, _, name = target.rpartition(".")
    if head.startswith("aioica_auth.testing.") and name in aioica_auth.testing.__all__:
        return f"aioica_auth.testing.{name}"
    if head.startswith("aioica_auth._") and name in aioica_auth.__all__:
        return f"aioica_auth.{name}"
    if head in {"aiohttp.client", "aiohttp.client_reqrep"}:
        return f"aiohttp.{name}"
    return None


def _resolve_private(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Signatures name a class by the module that defines it; link the public name instead."""
    if node.get("refdomain") != "py":
        return None
    public = _public_name(node["reftarget"])
    if public is None:
        return None
    node["reftarget"] = public
    found = env.get_domain("py").resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
    )
    if found is not None:
        return found
    from sphinx.ext import intersphinx

    return intersphinx.missing_reference(app, env, node, contnode)


def _public_bases(app: Any, name: str, obj: Any, options: Any, bases: list[Any]) -> None:
    """Show bases by their public names: `IcaError`, not `aioica_auth._errors.IcaError`."""
    for i, base in enumerate(bases):
        public = _public_name(f"{base.__module__}.{base.__qualname__}")
        if public is not None:
            bases[i] = f":py:class:`~{public}`"


_PROPERTY_LINES: dict[str, list[str]] = {}


def _keep_property(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what == "property":
        _PROPERTY_LINES[name] = list(lines)


def _property_as_method(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """napoleon reads a property's first line `A thing: more` as `type: description`; ours are
    sentences, so read them as a method's docstring (its sections still apply)."""
    if what == "property" and name in _PROPERTY_LINES:
        from sphinx.ext.napoleon.docstring import GoogleDocstring

        original = _PROPERTY_LINES.pop(name)
        lines[:] = GoogleDocstring(original, app.config, app, "method", name, obj, options).lines()


def _no_builtin_doc(
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    """A constant (`ICA_BASE_URL`, `__version__`) has no docstring of its own: autodoc would show
    `str`'s; the directive's own text (api.md) says what it is."""
    if what == "data" and isinstance(obj, str | int | float):
        lines.clear()


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _no_builtin_doc)
    app.connect("missing-reference", _resolve_private, priority=400)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("autodoc-process-docstring", _keep_property, priority=400)
    app.connect("autodoc-process-docstring", _property_as_method, priority=600)
