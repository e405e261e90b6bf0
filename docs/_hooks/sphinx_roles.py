"""A griffe extension for the API pages: Sphinx roles in docstrings shown as inline code.

The code's docstrings cross-reference with Sphinx roles (``:class:`~pkg.mod.Name```,
``:func:`f```); mkdocstrings renders docstrings as Markdown, where a role would print as is.
``mkdocs.yml`` loads this under the python handler's ``extensions``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")


def plain_roles(text: str) -> str:
    """``:role:`path``` -> ```path```; ``:role:`~a.b.c``` -> ```c``` (Sphinx's short form)."""
    return _ROLE.sub(lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", text)


class SphinxRoles(griffe.Extension):
    """Rewrites every loaded object's docstring with :func:`plain_roles`."""

    def on_instance(self, *, node: Any, obj: griffe.Object, agent: Any, **kwargs: Any) -> None:
        """griffe event: called once per object (module, class, function, attribute)."""
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)
