"""python -m train COMMAND — the student model: conversion, LoRA training, export."""
from traces.cli_dispatch import dispatch

COMMANDS = {
    "convert": ("train.models:convert_main", "convert the embedded GGUF student to a safetensors folder once"),
    "lora": ("train.lora:main", "fine-tune a LoRA (or QLoRA) adapter on the exported set: SFT, DPO or both"),
    "export": ("train.export:main", "write an adapter in standard PEFT form, or --merge into full weights"),
}


def main(argv=None):
    return dispatch("train", __doc__, COMMANDS, argv)
