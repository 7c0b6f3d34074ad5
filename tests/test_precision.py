"""precision = "auto": bf16 autocast only on a CPU with native bf16 (amx_bf16 / avx512_bf16 in /proc/cpuinfo), fp32
on an AVX2-only CPU; the choice reaches the trainer, and a bf16 step's loss matches fp32's within tolerance."""
import pytest
from builders.lora import settings, write_set

AVX2 = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma"
CPUS = {"avx2": AVX2, "avx512_bf16": AVX2 + " avx512f avx512bw avx512_bf16",
        "amx_bf16": AVX2 + " avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"}


@pytest.fixture
def cpu(tmp_path, monkeypatch):
    """Pretend to be a CPU with the given flags (a fake /proc/cpuinfo) and no CUDA."""
    import torch

    from train import precision
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def use(kind):
        path = tmp_path / f"cpuinfo-{kind}"
        path.write_text(f"processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: {CPUS[kind]}\n\n"
                        f"processor\t: 1\nflags\t\t: {CPUS[kind]}\n")
        monkeypatch.setattr(precision, "CPUINFO", path)
    return use


def test_flags_are_read_from_cpuinfo(tmp_path, cpu):
    from train.precision import cpu_bf16, cpu_flags
    cpu("amx_bf16")
    assert {"amx_bf16", "avx512_bf16", "avx2"} <= cpu_flags() and cpu_bf16() == "amx_bf16"
    cpu("avx512_bf16")
    assert cpu_bf16() == "avx512_bf16"
    cpu("avx2")
    assert cpu_bf16() is None
    assert cpu_flags(tmp_path / "missing") == set()  # no /proc/cpuinfo (macOS): no flags, so fp32


@pytest.mark.parametrize("kind, setting, bf16", [
    ("amx_bf16", "auto", True), ("avx512_bf16", "auto", True), ("avx2", "auto", False),
    ("amx_bf16", "fp32", False), ("avx2", "bf16", True)])
def test_auto_picks_bf16_only_where_the_cpu_has_it(tmp_path, tiny_model_dir, cpu, kind, setting, bf16):
    from train.trainer import device_plan
    from train.precision import choose
    cpu(kind)
    s, _ = settings(tmp_path, tiny_model_dir, tmp_path / "x.jsonl", precision=setting)
    assert device_plan(s) == {"cuda": False, "quantize": False, "bf16": bf16}
    why = choose(setting, cuda=False)[1]
    assert why.startswith("bf16" if bf16 else "fp32")
    if (kind, setting) == ("avx2", "bf16"):
        assert "slow" in why  # forced on a CPU without native bf16: allowed, with the reason


def test_bf16_autocast_step_matches_fp32_within_tolerance(tmp_path, tiny_model_dir, cpu):
    """The trainer gets the choice (fp32 weights, bf16 autocast) and the first step's loss agrees with fp32's."""
    import torch

    from train.lora import make_plan, train
    torch.set_num_threads(1)
    path = write_set(tmp_path, 4)
    first = {}
    for kind in ("avx2", "amx_bf16"):  # auto: fp32, then bf16 (emulated on a machine without it: tiny model only)
        cpu(kind)
        s, sources = settings(tmp_path, tiny_model_dir, path, max_steps=1, adapters_dir=str(tmp_path / kind))
        result = train(make_plan(s, sources), progress=False, keep_trainer=True)
        assert result.status == "complete", result.error
        assert result.trainer.args.bf16 is (kind == "amx_bf16") and result.metrics["precision"] == \
            ("bf16" if kind == "amx_bf16" else "fp32")
        assert next(result.trainer.model.parameters()).dtype == torch.float32  # autocast, not bf16 weights
        first[kind] = result.metrics["steps"][0]["loss"]
    assert first["amx_bf16"] == pytest.approx(first["avx2"], rel=0.02) and first["amx_bf16"] != first["avx2"]
