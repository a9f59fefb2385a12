"""Grokking driven by intrinsic task symmetry: algorithmic tasks (algorithmic), the
symmetry-violation diagnostic (symmetry), stage detection (stages), embedding geometry
(geometry), Grokfast (grokfast), the experiment (experiment) and its plots (plots).
See README.md."""
