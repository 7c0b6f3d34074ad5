"""Settings of the `curate` stage ([tool.mend.curate], MEND_CURATE_<KEY>)."""
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class CurateSettings:
    # number settings that may be negative (negative: the gate's own tolerance); the loader refuses the rest
    SIGNED: ClassVar[tuple] = ("sweep_prose_tolerance", "sweep_degenerate_tolerance")
    # --- teacher, synthesis, filters, export (owned by curate/synth/, curate/filters.py, curate/export.py) ---
    mode: str = "compose"  # compose (offline default, weak teacher) | full (strong teacher writes prompts too)
    teacher_url: str = "local"  # "local": start the teacher_backend server on loopback; else an OpenAI-compatible base URL
    teacher_backend: str = "llama.cpp"  # local server: llama.cpp (xllamacpp, serves the GGUF) | transformers
    # (`transformers serve`, HF folders). llama.cpp because it measured faster unguided and constrained, and keeps
    # every request's own sampling, logit_bias and grammar under continuous batching, so guided requests need no
    # second server (docs/benchmarks.md, the "teacher" rows and "teacher under load")
    teacher_slots: int = 8  # llama.cpp parallel slots (requests decoded together); 8 keeps 2 cores busy
    teacher_ctx_per_slot: int = 2048  # llama.cpp context tokens per slot (prompt + few-shot demos + completion)
    teacher_threads: int = 0  # llama.cpp CPU threads (0: every core this process may use)
    teacher_dialect: str = "auto"  # how constraints travel (curate/synth/constraints.py): auto (local: the backend's own;
    # remote: none) | llama.cpp | vllm | vllm-legacy | openai | transformers | none
    teacher_model: str = "smollm2-135m-instruct"  # local: model ref served (train.models.resolve); remote: model name
    teacher_api_key_env: str = ""  # env var holding the remote teacher's key (never the key itself)
    teacher_tokenizer: str = ""  # local tokenizer folder of a remote teacher (enables logit_bias guidance)
    teacher_allow_remote: bool = False  # a non-loopback teacher must be opted into
    teacher_concurrency: int = 8  # requests in flight (continuous batching gains up to ~8 on 2 cores)
    teacher_timeout_s: float = 300.0  # per request; the 135M model on CPU needs minutes under load
    teacher_rpm: int = 0  # teacher requests started per minute at most, as the provider's plan allows (0: unlimited)
    teacher_tpm: int = 0  # teacher tokens per minute at most (prompt estimate + max_tokens, then usage; 0: unlimited)
    teacher_cb_num_blocks: int = 32  # KV cache blocks (256 tokens each) under continuous batching; 0: sized from
    # free memory, which on a CPU takes most of the RAM (docs/benchmarks.md, "transformers serve KV cache")
    teacher_cb_max_batch_tokens: int = 1024  # tokens per continuous-batching step (0: auto)
    teacher_start_timeout_s: float = 240.0  # waiting for the local server's /health
    temperature: float = 0.9  # sampling temperature of the k samples (rejection sampling)
    top_p: float = 0.95  # nucleus sampling cut-off of those samples
    max_tokens: int = 0  # completion tokens per sample (0: the student's own [tool.mend.train] max_new_tokens, the
    # gate's budget too: a longer target teaches answers the gate cuts mid-sentence)
    k: int = 4  # teacher samples per prompt (k separate requests with distinct seeds: servers may ignore `n`)
    self_k: int = 8  # the self strategy: the student's own samples per prompt at most (curate/synth/student.py)
    self_per_prompt: int = 2  # ... stopping for a prompt once this many of its samples are kept
    per_cluster: int = 48  # prompts composed per cluster (failing seed prompts first, then recombinations); 48 (was
    # 16): the self strategy samples each prompt, and repairs come from 48 answers, not ~3 variants of each of 16
    failing_share: float = 0.5  # share of per_cluster taken from failing seed prompts; the rest pair other seed
    # requests with the cluster's instruction alone (1.0: failing prompts only, while there are enough)
    max_examples_per_cluster: int = 256  # candidates written per cluster (budget); 256 (was 64): the self strategy
    # keeps about 1 sample in 20, so 64 left it 16 tries once repairs had written 48
    max_calls_per_cluster: int = 256  # teacher (and self: student) calls per cluster (budget)
    max_calls_total: int = 2000  # uncached teacher (and self: student) calls per synth run (budget)
    max_cost_usd: float = 5.0  # teacher cost per synth run (budget; local costs 0)
    synth_turn_calls: int = 48  # calls (cached ones included) each (strategy, cluster) turn of compose mode sends at
    # most, counted between batches of 16: the budget that makes a rerun send the same requests, with the same seeds,
    # on any machine (0: none, the clock alone). The student's samples are then the same (288 of 288 in two fresh
    # nightlies); the built-in llama.cpp teacher's are not (36 of 63: its slots batch requests together). 48: one
    # self round over the 48 prompts of per_cluster, as the idle 2ff3939 nightly ran; the clock ended turns at other
    # points under load and a rerun kept other data (docs/results.md, 2026-12-07, HEADs 164d14a and de35acd)
    synth_minutes: float = 30.0  # wall-clock minutes per synth run for the teacher's and the student's samples (a
    # backstop: checked between batches of 16 requests, shared equally by the (strategy, cluster) turns left; repairs
    # go on; 0: no limit). It keeps a slow machine's nightly bounded (docs/benchmarks.md, "default nightly's synthesis
    # without a time budget"); where it ends a turn before synth_turn_calls, the synth table says so. 30 (was 15, the
    # only budget then): 6 clusters x 2 turns of 48 calls take about 18 minutes at the student's 0.5 calls/s on 2
    # idle cores. A re-run continues where the clock stopped it (calls are cached)
    guidance: str = "auto"  # never: drop the constrained strategy from `strategies` | auto | always: keep it (in
    # compose mode auto and always act the same: the constrained strategy guides every prompt it has a grammar for)
    guidance_threshold: float = 0.1  # cluster_order "fixable": a cluster whose earlier candidates (8 or more) verified
    # at least this share counts as fixable, besides those a repair, grammar or token ban can force
    guidance_k: int = 0  # constrained samples per prompt (0: same as k); guided text needs more tries to be fluent
    guidance_few_shot: int = 2  # verified examples shown as demonstrations in guided requests
    fluency_min_alpha: float = 0.6  # share of word-like tokens (evals/quality.py) below which text is not_fluent
    strategies: tuple = ("self", "repair", "sample")  # how candidates are made, tried in this order per cluster
    # until target_per_cluster (curate/synth/strategies.py): repair | self (the student's own samples: on-policy) |
    # constrained | sample | revise (a rewrite of each failing response: for strong teachers). No constrained by
    # default: grammar-forced text is the least on-policy there is, and with the built-in teacher (the student's own
    # weights, ~5x slower than in-process sampling) it took synthesis time from self; add it for a strong teacher.
    # self before repair (2026-12-07 sweep, docs/results.md): on-policy samples first, repairs fill the target
    target_per_cluster: int = 48  # kept (verified, fluent) candidates per cluster after which later strategies are
    # skipped (0: every strategy runs in full). 48, as the demo's recipe: at 16 the repairs alone reached it and the
    # self strategy never ran (default nightly, 2026-12-07: 126 of 128 examples were repairs)
    repair_min_overlap: float = 0.5  # share of the source's content words a repair must keep (repair.content_overlap)
    full_requests_per_call: int = 4  # full mode: new (request, response) pairs asked per teacher call
    near_dup_threshold: float = 0.8  # MinHash Jaccard above which two prompts+responses are near-duplicates
    semantic_threshold: float = 0.95  # MiniLM cosine above which two examples are semantic duplicates
    minhash_perm: int = 128  # MinHash permutations
    shingle: int = 5  # word shingle size for MinHash
    decontam_ngram: int = 13  # n-gram length for eval/holdout overlap (lm-eval's decontamination uses 13)
    decontam_semantic_threshold: float = 0.9  # MiniLM cosine to an eval/holdout prompt above which -> contaminated
    decontam_refs: tuple = ()  # extra JSONL files with a "prompt" field treated as eval sets
    replay_fraction: float = 0.3  # share of the exported training set that is replayed passing seed traffic
    replay_self_share: float = 0.0  # share of those replay rows that are the base's own greedy answers to
    # instruction-free seed requests (curate/replay.py; generated once, cached); the rest is passing traffic. 0: what
    # `curate sweep` chose on the demo data, 0.5 being no better (docs/benchmarks.md, "curate sweep, demo data")
    pair_max_similarity: float = 0.9  # preference pairs whose answers share more of their words (in order) are left
    # out: the DPO margin of a near-identical pair sits on its few edited tokens (curate/export.py, similarity)
    layout_targets: bool = False  # repairs that regroup an answer (dividers, section headers, paragraphs, bullets:
    # curate/export.py LAYOUT_CHECKS) as SFT targets too (never as preference pairs). Off: the sweep on the default
    # nightly's data chose it (validation degenerate share 34.4% -> 26.0% without them, 30.2% with; targets 49.8% vs
    # 48.7%; docs/results.md, 2026-12-07)
    max_train_examples: int = 256  # accepted examples exported at most, taken from every cluster in turn (0: all):
    # what keeps training within the default nightly's hour on 2 cores (docs/benchmarks.md, "DPO step time, demo").
    # 256 (was 192): the sweep's rule chose every accepted example (198 of the 164d14a nightly's, outside validation)
    # over 192, 17/0 against 15/0 on the validation targets (docs/results.md, 2026-12-07); 256 exports the same 198
    # there and still bounds training (~45 steps) on larger traffic
    train_out: str = "data/train/train.jsonl"  # export path (manifest next to it: train.manifest.json)
    focus_out: str = "data/train/focus.jsonl"  # the focus stage's training set (the claimed clusters only)
    max_clusters: int = 6  # clusters `curate synth` targets (0 = every cluster), chosen by cluster_order. Few: over
    # all 25 of the sample traffic's fixable clusters the nightly trained ~5 examples on each, its self strategy got
    # seconds per cluster, and the holdout's pooled targets moved 42 fixed / 40 broken (docs/results.md, 2026-12-07)
    cluster_order: str = "fixable"  # fixable (clusters some strategy can fix first, then by size) | size
    # --- hyperparameter sweep (owned by curate/loop/sweep.py) ---
    sweep_grid: tuple = (  # candidate configs: TrainSettings keys and replay_self_share / replay_fraction;
        # lora_alpha follows lora_r (2 r) unless given. In the order docs/architecture.md ("Recipes") tried them:
        "method=sft lr=3e-4 epochs=2 lora_r=16",  # rejection-sampling fine-tuning on verified (on-policy) samples
        "method=sft lr=1e-4 epochs=2 lora_r=16",  # the same, gentler
        "method=dpo lr=5e-5 epochs=1 lora_r=16 dpo_beta=0.5 dpo_loss=apo_zero",  # a gentle preference step
        "method=sft+dpo lr=5e-5 epochs=1 lora_r=16 dpo_beta=0.5",  # SFT, then a short DPO on the same adapter
    )
    sweep_val_fraction: float = 0.25  # share of seed groups (split key) carved out for validation
    sweep_val_max: int = 96  # validation prompts generated per candidate (the first by a hash of the id; filled with
    # single-instruction prompts from validation requests when there are fewer): 24 could not rank configs
    sweep_val_traffic: int = 256  # validation groups' seed traces, all kinds, answered by each candidate and the
    # base: the degenerate share the gate's guard counts, on traffic like the holdout's (0: not measured). 256
    # took all 235 of the 1,000-call sample traffic (one answer: 0.4 points instead of 0.8): on them the 2-epoch
    # recipe's rise was +4.3 points, 32 answers made degenerate and 22 cured (docs/results.md, 2026-12-07)
    sweep_anchors: int = 12  # instruction-free validation requests whose base answers measure anchoring
    sweep_anchor_tolerance: float = 0.10  # largest allowed rise of the per-token perplexity of the base's own
    # answers (exp(NLL_adapter - NLL_base) - 1); the gate's perplexity guard allows 10% too
    sweep_prose_docs: int = 40  # local prose documents (evals/lm_eval_tasks/prose.py) whose lm-eval word perplexity
    # each candidate and the base get, as the gate's perplexity guard measures it (as many as the gate's default);
    # 0: not measured (prose rise 0)
    sweep_prose_offset: int = 100  # the first of them: past every document the gate scores (its first
    # `gate_lm_eval_docs`, 40 by default), so the sweep never tunes on the gate's prose; a sweep refuses an offset
    # below gate_lm_eval_docs
    sweep_prose_tolerance: float = 0.05  # largest allowed rise of that word perplexity (ppl_adapter / ppl_base - 1):
    # half the gate's 10%, so a config chosen here has room left on the holdout (negative: the gate's own)
    sweep_degenerate_tolerance: float = 2.0  # points the share of degenerate validation answers may rise (negative:
    # the gate's gate_degeneration_tolerance, 5): stricter than the gate for the same reason
    sweep_dir: str = "data/sweeps"  # each candidate's training set: <sweep_dir>/<sweep_id>/c<k>/train.jsonl
    # --- the nightly (owned by curate/loop/nightly.py) ---
    nightly_review: str = "verified"  # verified (accept all that passed filters) | sample (review a sample first)
    nightly_review_sample: int = 20  # examples shown when nightly_review = "sample"
    nightly_promote: bool = True  # promote automatically when the gate says PROMOTE
    nightly_train_anyway: bool = False  # go on when the holdout is too small for the gate to decide (else exit 5)
    nightly_validate: bool = True  # before the gate, score the candidate and the base on the validation split
    # (sweep_val_*; its groups are left out of the nightly's training set) and give the gate only the clusters
    # validation supports (curate/loop/claims.py); false: the gate tests every trained cluster
    nightly_focus: bool = False  # when validation claims some trained clusters but not all, train again on the
    # claimed clusters' examples only and validate that adapter; the gate tests it (curate/loop/focus.py). Off: on
    # the default nightly's data it fixed fewer validation items of the claimed checks (8 and 2 net, 1 and 2 epochs)
    # than the adapter trained on every cluster (11), though it looped less (docs/results.md, 2026-12-07)
    focus_epochs: float = 0.0  # the focus stage's epochs; 0: the train stage's `epochs`
    nightly_claim_alpha: float = 0.2  # a cluster is claimed when validation fixed more of its check than it broke
    # at exact two-sided McNemar p <= this (a screening level: the holdout's own test is gate_alpha)
    # --- review (owned by curate/review/screen.py) ---
    reviewer: str = ""  # name stored with each decision; empty -> `git config user.name`, else $USER
    sample_accept_threshold: float = 0.8  # --sample K: reviewed acceptance rate a cluster needs for the rest to pass
    max_lines: int = 24  # lines of one prompt/response shown before folding ("… (K more lines)")
    max_chars: int = 4000  # characters of one prompt/response shown before folding
    reject_reasons: tuple = (  # the numbered list `r` offers (0 types a reason)
        "wrong or unhelpful answer",
        "ignores the instruction",
        "unnatural or degenerate text",
        "unsafe or inappropriate",
        "bad prompt",
    )
