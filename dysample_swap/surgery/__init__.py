"""The model surgery: observe -> decide -> rewrite -> report, and what keeps a swap (record, persistence).

* observe: :mod:`.sites` (one eager forward records every upsampling call: an
  :class:`~.sites.UpsampleSite`), :mod:`.example_inputs`, :mod:`.rewrite`'s owner traces;
* decide: :mod:`.policy` (every swap/skip rule and its reason: a :class:`~.policy.SiteDecision`;
  counts parameters, builds nothing);
* rewrite: :mod:`.rewrite` (torch.fx passes on the owning module, the eager fallback, in-place layers);
* :mod:`.swap`: the pipeline (:func:`~.swap.find_upsamplers`, :func:`~.swap.plan_swap`,
  :func:`~.swap.swap_upsamplers`, :func:`~.swap.unswap`) and the :class:`~.swap.SwapReport`;
* keep: :mod:`.record` (the replayable swap record), :mod:`.persist` (``save_swapped`` /
  ``load_swapped``), :mod:`.model_spec` (models built from a spec, never running what a file names);
* :mod:`.hooks`: how frameworks plug in (the surgery imports none).

It imports only :mod:`dysample_swap.upsamplers` below it; users import from :mod:`dysample_swap`.
"""
