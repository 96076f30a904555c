"""Griffe extension for the API reference (used by mkdocstrings; see mkdocs.yml).

Two things, both about the documentation build only; the package is not changed:

1. **Lazily loaded names.** ``dysample_swap/__init__.py`` loads the fine-tuning names on first use
   (PEP 562 ``__getattr__``, driven by its ``_LAZY`` mapping of name -> module), so neither
   griffe's static analysis nor its inspection sees them as members of the package. This adds each
   ``_LAZY`` name to the package as an alias of ``<module>.<name>``, so the reference uses the public
   identifiers (``::: dysample_swap.build_dataset``) and keeps working when the modules behind them
   move (only ``_LAZY`` changes).
2. **Docstring dialect.** The package's Google-style docstrings head their doctests ``Example:``
   (griffe's Google parser knows only ``Examples:``, and would render the ``>>>`` lines as nested
   quotes) and cross-reference with Sphinx roles (``:func:`~pkg.mod.name```), which Markdown does
   not know. Before parsing, ``Example:`` becomes ``Examples:`` and a role becomes inline code
   (``~`` keeps the last component, as Sphinx does).
3. **A name shared by a function and its module.** ``from dysample_swap.upsamplers import carafe``
   gives the function ``carafe`` at run time (the sub-package imports it over its own module
   ``carafe``), but griffe resolves the name to the module. A public name that resolves to a module
   holding a member of the same name is pointed at that member.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import griffe

PACKAGE = "dysample_swap"
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|obj|exc|const):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    shorten, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if shorten else target}`"


class DysampleSwapDocs(griffe.Extension):
    """Alias the package's lazily loaded names; adapt its docstrings to griffe's Google parser."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and obj.path.startswith(PACKAGE):
            text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(_role, text)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """griffe >= 2 calls this once the package is loaded."""
        self._alias_lazy_names(pkg)

    def on_package_loaded(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """griffe 1 (what Python 3.10 gets) calls this instead; running both is harmless."""
        self._alias_lazy_names(pkg)

    @staticmethod
    def _alias_lazy_names(pkg: griffe.Module) -> None:
        if pkg.path != PACKAGE or "_LAZY" not in pkg.members:
            return
        lazy = ast.literal_eval(str(pkg.members["_LAZY"].value))
        for name, module in lazy.items():
            if name not in pkg.members:
                pkg.set_member(name, griffe.Alias(name, f"{module}.{name}", parent=pkg))
        for name, member in list(pkg.members.items()):
            if not member.is_alias or name.startswith("_"):
                continue
            try:
                target = member.final_target
            except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue
            if target.is_module and name in target.members:
                pkg.set_member(name, griffe.Alias(name, f"{target.path}.{name}", parent=pkg))
