"""The :class:`SwapReport`: what a swap did, kept on the model, and the one history of its swaps.

Each ``swap_upsamplers`` call attaches its report to the model (``model.dysample_swap_report``);
an earlier swap's report is its ``previous``. That chain is the only history a swapped model
carries: the replayable swap record (:mod:`dysample_swap.surgery.record`) is derived from it.

Example:
    >>> import torch, torch.nn as nn
    >>> from dysample_swap import swap_upsamplers
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
    >>> net = swap_upsamplers(net, "dysample", (torch.rand(1, 3, 8, 8),), verbose=False)
    >>> [r.variant for r in history(net)]
    ['dysample']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from dysample_swap.surgery.policy import SiteDecision

REPORT_ATTRIBUTE = "dysample_swap_report"
"""Name of the attribute under which ``swap_upsamplers`` stores its :class:`SwapReport` on the model."""


def _portable(value: Any) -> Any:
    """A policy value that pickles: predicates become their description."""
    if isinstance(value, (list, tuple)):
        return type(value)(_portable(v) for v in value)
    if callable(value):
        return f"<predicate {getattr(value, '__qualname__', repr(value))}>"
    return value


@dataclass
class SwapReport:
    """What ``swap_upsamplers`` did (or, from :func:`plan_swap`, would do).

    Attributes:
        variant: the upsampler variant.
        sites: one :class:`~dysample_swap.surgery.policy.SiteDecision` per executed upsampling call
            (its observation is ``.site``; its fields read through).
        parameters_added: trainable parameters the new modules add.
        inputs: shapes of the example inputs (:func:`~dysample_swap.surgery.example_inputs.describe_inputs`),
            ``None`` when they are not plain tensors or lists of tensors.
        policy: the policy keyword arguments as given.
        originals: the ``nn.Upsample`` layers replaced in place, by path (kept for :func:`unswap`).
        previous: the report of an earlier swap of the same model (:func:`unswap` undoes both).

    Example:
        >>> SwapReport("dysample+", [], 0).swapped
        []
    """

    variant: str
    sites: list[SiteDecision]
    parameters_added: int
    inputs: list[dict[str, Any]] | None = None
    policy: dict[str, Any] = field(default_factory=dict)
    originals: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    previous: SwapReport | None = field(default=None, repr=False)

    @property
    def swapped(self) -> list[SiteDecision]:
        """Sites replaced by a new module.

        Example:
            >>> SwapReport("dysample", [], 0).swapped
            []
        """
        return [s for s in self.sites if s.action == "swap"]

    @property
    def skipped(self) -> list[SiteDecision]:
        """Sites left alone.

        Example:
            >>> SwapReport("dysample", [], 0).skipped
            []
        """
        return [s for s in self.sites if s.action == "skip"]

    def table(self) -> str:
        """The site table: path, kind, mode, channels, in -> out, scale/size, guide, action, how, reason.

        ``guide`` is the tensor the result is fused with at its resolution (``add`` or ``cat``, the
        module that produced it and its channels), what a guided upsampler reads; ``how`` is
        ``in place``, ``fx`` or ``eager fallback``; an eager-fallback reason ends with why torch.fx
        was not used.

        Example:
            >>> print(SwapReport("dysample", [], 0).table().splitlines()[-1])
            0 swapped, 0 skipped; variant dysample adds 0 parameters
        """
        header = ("path", "kind", "mode", "channels", "in -> out", "scale/size", "guide", "action", "how", "reason")
        rows = [header]
        for s in self.sites:
            mode = s.mode + (" ac" if s.align_corners else "")
            spatial = "x".join(map(str, s.input_shape[2:])) + " -> " + "x".join(map(str, s.output_shape[2:]))
            if s.size is not None:
                how = "size=" + "x".join(map(str, s.size))
            else:
                how = "scale=" + "x".join(f"{v:g}" for v in s.scale or ())
            reason = s.reason
            if s.method == "eager fallback":
                reason += f" [eager fallback: fx failed: {s.fx_error}]"
            guide = "-" if s.guide_shape is None else f"{s.fusion} {s.guide_producer} ({s.guide_shape[1]})"
            rows.append(
                (s.path, s.kind, mode, str(s.in_channels), spatial, how, guide, s.action, s.method or "-", reason)
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * len(header[-1]))
        lines.append(
            f"{len(self.swapped)} swapped, {len(self.skipped)} skipped; variant "
            f"{self.variant} adds {self.parameters_added:,} parameters"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["policy"] = {k: _portable(v) for k, v in self.policy.items()}
        return state


def swap_report(model: nn.Module) -> SwapReport:
    """The :class:`SwapReport` that ``swap_upsamplers`` attached to ``model``.

    Raises:
        ValueError: when ``model`` did not come out of ``swap_upsamplers``.

    Example:
        >>> import torch.nn as nn
        >>> from dysample_swap import swap_upsamplers
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Upsample(scale_factor=2), nn.Conv2d(4, 2, 1))
        >>> net = swap_upsamplers(net, "dysample", verbose=False)
        >>> len(swap_report(net).swapped)
        1
    """
    report = getattr(model, REPORT_ATTRIBUTE, None)
    if not isinstance(report, SwapReport):
        raise ValueError(f"{type(model).__name__} has no swap report; it was not returned by swap_upsamplers")
    return report


def history(model: nn.Module) -> list[SwapReport]:
    """The reports of every swap of ``model``, oldest first (empty when it was not swapped).

    Example:
        >>> history(nn.Identity())
        []
    """
    report = getattr(model, REPORT_ATTRIBUTE, None)
    reports: list[SwapReport] = []
    while isinstance(report, SwapReport):
        reports.insert(0, report)
        report = report.previous
    return reports
