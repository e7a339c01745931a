"""diffusers-backed samplers (extra `[diffusers]`): published few-step models configured as their cards say.

samplers.py  the registered samplers (sdxl-turbo, lcm, consistency-model, sdxl-lightning, dmd2, hyper-sd,
             diffusers-ode); the generic `flow-map` lives in bench/adapters/flow_map_generic.py
base.py      loading, hardware settings, per-image seeds, step-specific checkpoints, NFE hooks
weights.py   model ids, local paths and `tiny:<kind>`, offline first (MissingWeightsError with the fix)
tiny.py      tiny random-weight pipelines for offline tests and suites/tiny_diffusers.yaml
__main__.py  `python -m bench.adapters.hf doctor|prefetch`
See docs/real-models.md.
"""
