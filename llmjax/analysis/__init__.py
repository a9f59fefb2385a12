"""Probes shared by experiments: symmetry violation, embedding geometry, stage detection."""
