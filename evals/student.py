"""Who answers for the student when mend scores it: in-process (train.generate, the default) or a served student.

    student = Student("smollm2-135m-instruct", adapter="adapters/run-1")
    gens = student.generate(conversations)     # list[train.generate.Generation], greedy, the token budget
    answer_settings()                          # the generation settings an eval run records

Eval regeneration (evals.runner, so the gate), the sweep's validation scoring and the nightly's claims all answer
through `Student`; `[tool.mend.evals] student_url` decides how, for all of them at once:
- empty: the model (+ adapter) is loaded here and answers with HF `generate` (train.generate);
- an OpenAI-compatible base URL (vLLM, llama.cpp, `transformers serve`): each conversation is one chat request,
  temperature 0 and `max_tokens` = the token budget, the chat template applied by the server. The request's `model`
  is the served name: the base's (`student_model`, else the model ref) or the adapter's, as vLLM's
  `--lora-modules NAME=FOLDER` names it (`student_adapters` maps a folder to its name, else the folder's own name).
  Requests go through evals.client (concurrency, retries, loopback-only unless `allow_remote`, the key from the
  variable `student_api_key_env` names), cached in `llm_calls` under the adapter's hash: one name, new weights,
  new answers.
A served run records `chat_template: "server"` and the server's URL in its generation settings (answer_settings),
so the gate never takes an in-process run for a served one or the reverse (evals.runs.find_run compares them).
Likelihoods (the sweep's anchor NLL, the gate's perplexity and drift guards) are not answers: they stay in-process.
"""
from __future__ import annotations

from pathlib import Path

from evals.client import Client, EndpointError
from traces import settings as settings_mod
from traces.hashing import adapter_hash
from traces.scrub import scrub_text
from train import generate as tg


class StudentError(EndpointError):
    """The served student did not answer every request; the message names the server, the model and the cause."""


def answer_settings(s=None) -> dict:
    """The greedy settings of the student's answers as eval runs record them: train.generate's, and for a served
    student where the chat template was applied and who answered."""
    s = s or settings_mod.load("evals")
    gen = tg.greedy_settings()
    if not s.student_url:
        return gen
    return {**gen, "chat_template": "server", "server": scrub_text(s.student_url.rstrip("/"))}


def served_name(model_ref: str, adapter, s) -> str:
    """The `model` a request names: the adapter's served name, or the base's."""
    if adapter is None:
        return s.student_model or model_ref
    names = {settings_mod.resolve_path(k): v for k, v in s.student_adapters.items()}
    return names.get(settings_mod.resolve_path(adapter)) or Path(adapter).name


class Student:
    """(model ref, adapter) answering greedily, in-process or served as `student_url` says."""

    def __init__(self, model_ref: str, adapter=None, a_hash: str | None = None, settings=None):
        self.s = settings or settings_mod.load("evals")
        self.model_ref, self.adapter, self.a_hash = model_ref, adapter, a_hash
        self._loaded = self._client = None

    @property
    def served(self) -> bool:
        return bool(self.s.student_url)

    @property
    def where(self) -> str:
        return f"served at {scrub_text(self.s.student_url)}" if self.served else "in-process"

    @property
    def chunk(self) -> int:
        """Conversations per call a caller that saves as it goes should pass: two batches, or enough requests to
        keep every one of the client's connections busy."""
        return max(1, 4 * self.s.client_concurrency if self.served else 2 * self.s.gen_batch_size)

    def loaded(self):
        """(model, tokenizer) in this process, loaded once: what scores likelihoods, and answers when not served."""
        if self._loaded is None:
            from train.models import load
            self._loaded = load(self.model_ref, adapter=self.adapter)
        return self._loaded

    def generate(self, conversations, *, max_new_tokens: int | None = None, batch_size: int | None = None,
                 progress=True) -> list[tg.Generation]:
        """One greedy answer per conversation, in order (train.generate.generate's return)."""
        if not conversations:
            return []
        budget = tg.token_budget(max_new_tokens)
        if self.served:
            return self._served(conversations, budget, progress)
        model, tok = self.loaded()
        return tg.generate(model, tok, conversations, max_new_tokens=budget, temperature=0.0,
                           batch_size=batch_size or self.s.gen_batch_size, progress=progress)

    def client(self) -> Client:
        """The served student's client, made (and its endpoint checked: a clear error now) once."""
        if self._client is None:
            s, name = self.s, served_name(self.model_ref, self.adapter, self.s)
            weights = self.a_hash or adapter_hash(self.adapter) or f"base:{self.model_ref}"
            client = Client(s.student_url, name, purpose="student",
                            api_key_env=s.student_api_key_env or "OPENAI_API_KEY", concurrency=s.client_concurrency,
                            max_retries=s.client_max_retries, timeout_s=s.client_timeout_s,
                            allow_remote=s.allow_remote, prices=s.prices, weights=weights)
            client.check_endpoint()
            self._client = client
        return self._client

    def _served(self, conversations, budget: int, progress) -> list[tg.Generation]:
        client = self.client()
        requests = [{"model": client.model, "messages": list(c), "temperature": 0.0, "max_tokens": budget}
                    for c in conversations]
        calls = client.complete_many(requests, progress=progress)
        failed = [c for c in calls if c.error]
        if failed:
            raise StudentError(
                f"{len(failed)} of {len(calls)} requests to the student at {client.endpoint} (model "
                f"{client.model!r}) failed; the first: {failed[0].error}. Is {client.model!r} served there? (vLLM: "
                f"--lora-modules {client.model}=ADAPTER_FOLDER; names: [tool.mend.evals] student_adapters, "
                "student_model)")
        return [_generation(c) for c in calls]


def _generation(call) -> tg.Generation:
    """A chat completion as train.generate's Generation (finish_reason "stop" or "length", as the server says)."""
    choices = (call.response or {}).get("choices") or [{}]
    return tg.Generation(text=call.text or "", prompt_tokens=int(call.prompt_tokens or 0),
                         completion_tokens=int(call.completion_tokens or 0),
                         finish_reason=choices[0].get("finish_reason") or "stop")
