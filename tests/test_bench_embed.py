"""bench/bench_embed.py's pure parts: the texts it embeds and the rows it builds (the measuring needs MiniLM and Ray,
so it runs in `python -m bench --only embed`, not here)."""
from bench import bench_embed
from bench.__main__ import COLUMNS, read_existing, record_rows


def test_texts_are_distinct_prompts_and_the_same_for_a_seed():
    texts = bench_embed.make_texts(500)
    assert len(texts) == len(set(texts)) == 500
    assert texts == bench_embed.make_texts(500)
    assert bench_embed.make_texts(550)[:500] == texts  # the cached pass's new texts extend the same list
    assert bench_embed.make_texts(500, seed=1) != texts
    assert all(t.split()[0] in bench_embed.VERBS and " about " in t for t in texts)


def measured(**over):
    m = {"n": 1000, "new": 100, "per_text_n": 100, "cores": 2, "threads": 2, "words": (6, 23.0, 47),
         "loads": {"per text": 4.0, "batched": 5.0, "cached": 5.5, "1 thread": 5.8, "Ray start": 6.0, "Ray": 6.5, "after": 7.0},
         "cpu": {"per_text": 20.0, "batched": 8.0, "cold": 9.0, "warm": 1.0, "one_thread": 6.0}, "one_thread_s": 8.0,
         "per_text_s": 50.0, "batched_s": 10.0, "cold_s": 12.0, "warm_s": 2.0, "embedded": [1000, 100],
         "cache_same": True, "ray_s": 20.0, "ray_start_s": 3.0, "ray_warm_s": 25.0, "ray_same": True,
         "ray_max_diff": 2e-7}
    return {**m, **over}


def test_rows_carry_every_column_and_ratios_within_the_run():
    rows = bench_embed.rows(measured())
    assert [r["benchmark"] for r in rows] == ["embedding, batched", "embedding, cached per text", "embedding on Ray"]
    assert all(set(COLUMNS[:7]) <= set(r) for r in rows)
    batched, warm, ray = rows
    assert (batched["mend"], batched["baseline"], batched["ratio"]) == (100.0, 2.0, 50.0)
    assert (warm["mend"], warm["baseline"], warm["ratio"]) == (500.0, 100.0, 5.0)
    assert (ray["mend"], ray["baseline"], ray["ratio"]) == (50.0, 100.0, 0.5)
    assert "100 embedded (only the new: True)" in warm["notes"]
    assert "equal the local ones (atol 1e-5): True" in ray["notes"]
    assert "on 1 thread made 125.0 texts/s" in ray["notes"] and "Ray vs that is 0.40x" in ray["notes"]
    assert all("per text 4.0, batched 5.0" in r["notes"] and "after 7.0" in r["notes"] for r in rows)


def test_rows_say_when_the_cache_embedded_more_than_the_new_texts():
    warm = bench_embed.rows(measured(embedded=[1000, 1000]))[1]
    assert "1,000 embedded (only the new: False)" in warm["notes"]


def test_rows_are_recorded_under_the_module_name(tmp_path):
    out = tmp_path / "benchmarks.md"
    record_rows("embed", bench_embed.rows(measured()), out)
    got = read_existing(out)
    assert [(r["_module"], r["benchmark"]) for r in got] == [("embed", "embedding, batched"),
                                                             ("embed", "embedding, cached per text"),
                                                             ("embed", "embedding on Ray")]
