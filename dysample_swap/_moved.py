"""Module paths of release 0.1.0, kept for its pickles.

A whole pickled swapped model (``torch.save(model)``, an ultralytics ``last.pt``/``best.pt``)
names the classes and functions it needs by module path: ``dysample_swap.dysample.DySample``,
``dysample_swap.rewrite._rebuild``... Those modules have moved; :func:`alias_old_paths` makes
each old path name the module that holds its contents now, so such files keep loading. Nothing
here is for new code: import from :mod:`dysample_swap`.

Example:
    >>> import sys
    >>> sys.modules["dysample_swap.dysample"].DySample.__module__
    'dysample_swap.upsamplers.dysample.module'
"""

from __future__ import annotations

import importlib
import sys

OLD_PATHS = {
    "dysample_swap.dysample": "dysample_swap.upsamplers.dysample.module",
    "dysample_swap.sampling": "dysample_swap.upsamplers.dysample.sampling",
    "dysample_swap.native": "dysample_swap.upsamplers.dysample.native",
    "dysample_swap.native_sampler": "dysample_swap.upsamplers.dysample.native_sampler",
    "dysample_swap.variants": "dysample_swap.upsamplers.dysample.variants",
    "dysample_swap.sites": "dysample_swap.surgery.sites",
    "dysample_swap.policy": "dysample_swap.surgery.policy",
    "dysample_swap.example_inputs": "dysample_swap.surgery.example_inputs",
    "dysample_swap.rewrite": "dysample_swap.surgery.install",
    "dysample_swap.swap": "dysample_swap.surgery.swap",
    "dysample_swap.swapfile": "dysample_swap.surgery.persist",
    "dysample_swap.model_spec": "dysample_swap.surgery.model_spec",
    "dysample_swap.integrations.record": "dysample_swap.surgery.record",
}
"""Each 0.1.0 module path -> the module that holds its pickled names now."""


def alias_old_paths() -> None:
    """Register every old path in ``sys.modules`` (the new modules are already imported by the package).

    Example:
        >>> alias_old_paths()
        >>> "dysample_swap.swapfile" in sys.modules
        True
    """
    for old, new in OLD_PATHS.items():
        sys.modules.setdefault(old, importlib.import_module(new))
