"""Ahead-of-time compilation for TPU topologies from any host: will a preset's programs fit a
slice, and how fast could they run, before a pod is rented.

  python -m llmjax.aot --config configs/X.py[:PRESET] --topology v5e:2x4 [--config.KEY=VALUE]

With libtpu installed (the `tpu` extra), jax compiles for a named topology without its chips
(llmjax.aot.topology). The experiment describes the programs its run compiles
(`aot_programs(config, parallel)` in its module, built from the engine's own jitted functions:
llmjax.aot.programs); each is lowered with abstract params and batches on the config's mesh over
the topology's devices, compiled by the TPU compiler and read back (llmjax.aot.report): one JSON
line per program. No weight is read: an `hf:DIR` start needs only its config.json.
"""
