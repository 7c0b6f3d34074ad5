"""The embedder: unit vectors of dimension 384; similar texts land close (real MiniLM from its wheel)."""
import numpy as np
import pytest

from train.embed import embed


def test_empty_input_needs_no_model():
    assert embed([]).shape == (0, 384)


@pytest.mark.integration
def test_embeddings_are_normalized_and_meaningful():
    vecs = embed(["How do I reset my password?", "I forgot my password, how can I change it?",
                  "Bake the bread at 220 degrees for thirty minutes."], batch_size=2, progress=True)
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > 0.6 > sims[0, 2]
