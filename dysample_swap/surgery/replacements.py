"""Build the modules the policy decided on, and put those that replace an ``nn.Upsample`` layer in place.

Nothing is decided here: each module is built from its :class:`~dysample_swap.surgery.policy.SiteDecision`
(channels, scale, parameters), and a module whose parameter count differs from the planned one is
a bug that stops the swap.

Example:
    >>> import torch, torch.nn as nn
    >>> from dysample_swap import plan_swap
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
    >>> decision = plan_swap(net, "dysample", torch.rand(1, 3, 4, 4), verbose=False).swapped[0]
    >>> from dysample_swap.surgery.policy import SwapPolicy
    >>> type(replace_in_place(net, "1", decision, "dysample", SwapPolicy())).__name__, type(net[1]).__name__
    ('Upsample', 'DySample')
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from dysample_swap.surgery.hooks import hooks_for
from dysample_swap.surgery.policy import SiteDecision, SwapPolicy, anchor_for, routed_guide
from dysample_swap.upsamplers.registry import create_upsampler, needs_guide

_UPSAMPLE_STATE = frozenset(nn.Upsample(scale_factor=2.0).__dict__)


def _like(model: nn.Module, owner: nn.Module) -> dict[str, Any]:
    """The device and floating dtype of ``owner`` (else of ``model``), for a new module placed in it."""
    for tensor in (*owner.parameters(), *owner.buffers(), *model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return {"device": tensor.device, "dtype": tensor.dtype}
    return {}


def build_replacement(
    model: nn.Module, owner: nn.Module, decision: SiteDecision, variant: str, policy: SwapPolicy, **defaults: Any
) -> nn.Module:
    """The new module a swapped decision calls for, on ``owner``'s device and dtype and in its training mode.

    Raises:
        RuntimeError: the module's parameter count differs from the decision's (a bug).

    Example:
        >>> import torch
        >>> from dysample_swap import plan_swap
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Upsample(scale_factor=2), nn.Conv2d(8, 2, 1))
        >>> decision = plan_swap(net, "dysample", torch.rand(1, 3, 4, 4), verbose=False).swapped[0]
        >>> type(build_replacement(net, net, decision, "dysample", SwapPolicy())).__name__
        'DySample'
    """
    module = create_upsampler(
        variant,
        decision.in_channels,
        decision.upsampler_scale,
        anchor=anchor_for(decision.site, policy),
        init=policy.init,
        groups_fallback=policy.groups_fallback,
        chain=policy.chain,
        positions=policy.positions,
        **({"guide_channels": decision.guide_shape[1]} if needs_guide(variant) and decision.guide_shape else {}),
        **defaults,
    )
    built = sum(p.numel() for p in module.parameters())
    if built != decision.parameters:
        raise RuntimeError(
            f"dysample_swap bug: {decision.path} was planned with {decision.parameters} parameters, "
            f"its {type(module).__name__} has {built}"
        )
    return module.to(**_like(model, owner)).train(owner.training)


def replace_in_place(
    model: nn.Module, path: str, decision: SiteDecision, variant: str, policy: SwapPolicy
) -> nn.Module:
    """Put a new module where the ``nn.Upsample`` at ``path`` is; returns the original layer.

    The new module takes the layer's ``size``/``scale_factor`` as its defaults, its training
    mode, and every attribute a framework set on the layer (ultralytics' ``i``, ``f``, ``type``,
    ``np``), so the framework's own code runs it as it ran the layer. A guided upsampler is wrapped
    in the layer the framework's ``guide_layer`` hook makes, which gets the guide through its wiring.
    """
    parent_path, _, child = path.rpartition(".")
    parent = model if not parent_path else model.get_submodule(parent_path)
    upsample = getattr(parent, child)
    new = build_replacement(
        model, parent, decision, variant, policy, size=upsample.size, scale_factor=upsample.scale_factor
    ).train(upsample.training)
    if needs_guide(variant):  # the framework wires the guide in (policy.routed_guide said where)
        hooks = hooks_for(model, having="guide_layer")
        index = routed_guide(model, [decision])
        if hooks is None or hooks.guide_layer is None or index is None:
            raise RuntimeError(f"dysample_swap bug: {path} was planned in place without a route for its guide")
        new = hooks.guide_layer(new, upsample, index)
    for key, value in upsample.__dict__.items():
        if key not in _UPSAMPLE_STATE and key not in new.__dict__:
            setattr(new, key, value)
    setattr(parent, child, new)
    return upsample
