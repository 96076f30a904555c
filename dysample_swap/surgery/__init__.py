"""The model surgery: observe -> decide -> rewrite -> report, and what keeps a swap (record, persistence).

* observe: :mod:`.sites` (one eager forward records every upsampling call: an
  :class:`~.sites.UpsampleSite`), :mod:`.example_inputs`, and how each owner traces
  (:func:`.fx_rewrite.plan_owner`);
* decide: :mod:`.policy` (every swap/skip rule and its reason, the post-trace ones included: a
  :class:`~.policy.SiteDecision`; counts parameters, builds nothing);
* rewrite: :mod:`.fx_rewrite` (torch.fx passes on the owning module), :mod:`.eager` (the eager
  fallback's router), :mod:`.install` (installed forwards, pickling, restore), :mod:`.replacements`
  (the decided modules built, in-place layers);
* :mod:`.swap`: the pipeline (:func:`~.swap.find_upsamplers`, :func:`~.swap.plan_swap`,
  :func:`~.swap.swap_upsamplers`, :func:`~.swap.unswap`); :mod:`.report`: the
  :class:`~.report.SwapReport`, the one history a swapped model carries;
* keep: :mod:`.record` (the replayable swap record), :mod:`.persist` (``save_swapped`` /
  ``load_swapped``), :mod:`.model_spec` (models built from a spec, never running what a file names);
* :mod:`.hooks`: how frameworks plug in (the surgery imports none).

It imports only :mod:`dysample_swap.upsamplers` below it; users import from :mod:`dysample_swap`.
"""
