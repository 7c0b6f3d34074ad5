"""curate filter's decontamination: 13-gram overlap and embedding similarity against holdout traces and
reference files named in settings; dropped rows become `contaminated` with the reason and what they hit."""
import json

import pytest
from builders.examples import add, bag_embed, state

from curate import dedup
from curate import filters
from traces import store

HOLDOUT = ("Write a detailed letter to the city council explaining why the old library on Main Street should be "
           "turned into a community center for young people and families")


@pytest.fixture(autouse=True)
def cheap_embedder(monkeypatch):
    monkeypatch.setattr(filters, "embed_texts", bag_embed)


def holdout_trace(tid, prompt):
    with store.connect() as con:
        con.execute("""INSERT INTO traces (trace_id, source_format, source_file, ingest_id, messages, prompt,
                       response, group_key, split) VALUES (?, 'test', 'f', 'i', ?, ?, 'r', ?, 'holdout')""",
                    [tid, json.dumps([{"role": "user", "content": prompt}]), prompt, tid])


def test_ngram13_overlap_with_holdout():
    holdout_trace("h1", HOLDOUT)
    add("x", "Please: " + HOLDOUT.upper() + " Thanks, all in lowercase.", "a fine letter follows here")
    add("y", "Write a haiku about snow falling on a silent pond at dawn.", "snow on the pond")
    filters.run_filters()
    s = state()
    assert s["x"][:3] == ("contaminated", "ngram13", "h1")
    assert s["y"][0] == "pending_review"


def test_embedding_similarity_with_holdout():
    holdout_trace("h1", "city council library community center young people")
    # same words, shuffled, fewer than 13 in a row: no shared 13-gram, but the embedding matches
    add("x", "young people community center library council city", "a reply")
    filters.run_filters()
    s = state()
    assert s["x"][0] == "contaminated" and s["x"][1].startswith("embedding: cosine") and s["x"][2] == "h1"


def test_reference_files_from_settings(tmp_path, monkeypatch):
    ref = tmp_path / "bench.jsonl"
    ref.write_text(json.dumps({"prompt": HOLDOUT, "key": 1}) + "\n")
    monkeypatch.setenv("MEND_CURATE_DECONTAM_REFS", json.dumps([str(ref)]))
    add("x", HOLDOUT + " Answer in lowercase.", "a fine letter")
    filters.run_filters()
    assert state()["x"][:3] == ("contaminated", "ngram13", "bench.jsonl:1")


def test_bad_reference_file_names_file_and_line(tmp_path, monkeypatch):
    ref = tmp_path / "bad.jsonl"
    ref.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    monkeypatch.setenv("MEND_CURATE_DECONTAM_REFS", json.dumps([str(ref)]))
    add("x", "anything", "a reply")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        filters.run_filters()


def test_ngram_kernel_short_texts_never_match():
    assert (dedup.ngram_contaminated(["one two three"], ["one two three"]) == -1).all()
    long = " ".join(f"w{i}" for i in range(20))
    assert dedup.ngram_contaminated(["x " + long, "nothing here"], ["y " + long]).tolist() == [0, -1]


def test_ngrams_the_seed_traffic_shares_are_templates_not_contamination():
    template = "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed."
    holdout = "Describe the bamboo forest at dawn for a travel magazine. " + template
    synthetic = "Write a note to a neighbour about a lost cat. " + template
    seed = ["Plan a picnic for four friends. " + template]
    assert dedup.ngram_contaminated([synthetic], [holdout]).tolist() == [0]          # the template alone hits
    assert dedup.ngram_contaminated([synthetic], [holdout], shared=seed).tolist() == [-1]
    # holdout content the seed traffic does not carry still counts
    content = "Describe the bamboo forest at dawn for a travel magazine and its readers"  # 13 words
    leaked = content + ", please."
    assert dedup.ngram_contaminated([leaked], [content + ". " + template], shared=seed).tolist() == [0]


def test_eval_prompt_embeddings_are_cached_per_prompt(monkeypatch):
    """Issue 24 item 6: one more holdout prompt embeds that prompt alone, and the vectors are those of embedding them
    all at once; another embedder never reads them."""
    import numpy as np
    from builders.examples import bag_embed
    calls = []

    def counting(texts):
        calls.append(list(texts))
        return bag_embed(texts)
    monkeypatch.setattr(filters, "embed_texts", counting)
    prompts = [f"eval prompt {i} about the topic numbered {i * 7}" for i in range(5)]
    first = filters.cached_prompt_embeddings(prompts[:4] + prompts[:1])  # a repeated prompt is embedded once
    second = filters.cached_prompt_embeddings(prompts)
    assert calls == [prompts[:4], [prompts[4]]]
    assert np.array_equal(first, bag_embed(prompts[:4] + prompts[:1])) and np.array_equal(second, bag_embed(prompts))
    monkeypatch.setattr(filters, "embed_texts", bag_embed)
    filters.cached_prompt_embeddings(prompts)
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT embedder, count(*) FROM embedding_cache GROUP BY ALL ORDER BY 1").fetchall() == [
            ("builders.examples.bag_embed", 5),
            ("test_decontam.test_eval_prompt_embeddings_are_cached_per_prompt.<locals>.counting", 5)]
