"""Sphinx configuration: furo, MyST (Markdown pages), autodoc for the API reference.

Built by `tox -e docs` and by tests/test_docs.py, with warnings as errors.
"""

from __future__ import annotations

import inspect
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from sphinx.util import logging

import atomicfile

logger = logging.getLogger(__name__)

project = "atomicfile"
author = "The atomicfile developers"
copyright = "the atomicfile developers"
release = version = atomicfile.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
# The docstrings mark names with single backquotes, as the README does: render them as code.
default_role = "code"

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# A listed member without a docstring is shown (and fails the build below), not dropped.
autodoc_default_options = {"undoc-members": True}

# No network at build time: the standard library's inventory is not fetched.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

html_theme = "furo"
html_title = f"atomicfile {release}"


def _require_docstring(app, what, name, obj, options, signature, return_annotation):  # type: ignore[no-untyped-def]
    """A documented public name without a docstring fails the build (warnings are errors).
    Checked at the signature, which autodoc processes for every object it documents."""
    if not (inspect.getdoc(obj) or "").strip():
        logger.warning("%s has no docstring", name, location=name)
    if getattr(obj, "__annotations__", {}).get("return") == "_F":
        # AtomicFile's file type is a TypeVar only for type checkers (None at run time,
        # where `typing` is not imported): the file object `open()` gives for the mode.
        return signature, "IO[Any]"
    return None


def _require_every_public_name(app, env):  # type: ignore[no-untyped-def]
    """Every name in `atomicfile.__all__` is in the API reference."""
    documented = set(env.domaindata["py"]["objects"])
    for name in atomicfile.__all__:
        if f"atomicfile.{name}" not in documented:
            logger.warning("atomicfile.%s is not in the API reference (docs/api.md)", name)


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("autodoc-process-signature", _require_docstring)
    app.connect("env-check-consistency", _require_every_public_name)
