"""The Hugging Face bridge: a mypt bundle <-> a transformers folder, with the same logits both ways.

One transformers class per architecture, each a mapping table in its own file: gpt2.py
(GPT2LMHeadModel: nanoGPT's architecture, so every bundle from before the architecture options),
qwen3.py (Qwen3ForCausalLM: mypt's default, RoPE + RMSNorm + QK-norm + SwiGLU) and llama.py
(LlamaForCausalLM: the same without QK-norm). vocab.py holds the tokenizer side; bridge.py the
export, the import and `--model.init_from`.

transformers is an optional extra (`pip install mypt[hf]`): it is imported only by the functions
that need it, so `mypt` itself starts without it.
"""

from mypt.hf.bridge import (
    CLASSES,
    GPT2_HUB_NAMES,
    IMPORT_BATCH_SIZE,
    class_for,
    export_hf,
    exported_class,
    import_hf,
    is_hf_folder,
    logit_gap,
    require_transformers,
    resolve_init_from,
)
from mypt.hf.gpt2 import PAD_LOGIT, padding_rows
from mypt.hf.vocab import MYPT_TOKENIZER_FILE, bos_token_id, hf_tokenizer_for, token_rows

__all__ = [
    "CLASSES",
    "GPT2_HUB_NAMES",
    "IMPORT_BATCH_SIZE",
    "MYPT_TOKENIZER_FILE",
    "PAD_LOGIT",
    "bos_token_id",
    "class_for",
    "export_hf",
    "exported_class",
    "hf_tokenizer_for",
    "import_hf",
    "is_hf_folder",
    "logit_gap",
    "padding_rows",
    "require_transformers",
    "resolve_init_from",
    "token_rows",
]
