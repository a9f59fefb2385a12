"""Data: tokenizers, readers, TFDS builders for local data, grain pipelines."""
