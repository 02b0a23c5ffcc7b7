"""`--data.tokenizer bpe`: a byte-level BPE learnt from the training text, kept in the bundle, reused
by resume and fine-tune, read by every command; and its bad inputs, each one `mypt: error:` line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import TINY, dante_text
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray
from test_bad_input import _rewrite_manifest, assert_one_error_line, snapshot

from mypt import bundle
from mypt.bpe import sample_chunks, train_bpe
from mypt.dashboard import SAMPLE_TAG

# characters a BPE learnt from Dante never saw (emoji, CJK), tab runs, blank-line runs, accents
TRICKY = "Nel mezzo\t\tdel cammin 🎉 日本語\n\n\n  perché più là già così ’ «»"
BPE = ("--data.tokenizer", "bpe", "--data.vocab_size", "300")
LEARNING = "learnt a 300-token byte-level BPE"


@pytest.fixture
def bpe_text(tmp_path: Path) -> Path:
    path = tmp_path / "dante.txt"
    path.write_text(dante_text(30_000) + TRICKY + "\n", encoding="utf-8")
    return path


def _fit(mypt, *args: str):
    r = mypt("fit", *TINY, *args)
    assert r.code == 0, r
    return r


def test_bpe_fit_generate_resume_fine_tune(mypt, bpe_text, tmp_path):
    r = _fit(mypt, *BPE, "--data.input_file", bpe_text, "--model_name", "b", "--trainer.max_steps", "10",
             "--dashboard.max_new_tokens", "8", "--dashboard.prompt", TRICKY)  # fmt: skip
    assert LEARNING in r.err
    saved = Path("checkpoints/b")
    tokenizer_json = (saved / bundle.TOKENIZER_FILE).read_bytes()
    data = json.loads(tokenizer_json)
    assert data["token_kind"] == "bpe" and data["tokenizer"]["model"]["type"] == "BPE"
    assert bundle.load_config(saved)["vocab_size"] == 320  # 300 padded to a multiple of 64
    assert 0 < bundle.load_training_state(saved)["val_bpb"] < 12  # bits per byte from its token_byte_lengths
    # the token cache is keyed by the tokenizer's own hash
    ident = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    assert [p.name for p in Path("token_cache").glob("*.json")] == [
        next(Path("token_cache").glob("*.json")).name
    ]
    assert next(Path("token_cache").glob("*.json")).name.endswith(f"-bpe-{ident}.json")

    # every reader takes it: generate (exact round trip of text it never saw; seeded), inspect, list, predict
    r = mypt("generate", "b", "--prompt", TRICKY, "--max_new_tokens", "0")
    assert r.code == 0 and r.out == TRICKY + "\n", r
    runs = [
        mypt("generate", "b", "--prompt", "Nel", "--max_new_tokens", "12", "--seed", "3").out for _ in "ab"
    ]
    assert runs[0] == runs[1] and runs[0].startswith("Nel") and len(runs[0]) > 5
    info = json.loads(mypt("inspect", "b", "--json").out)["tokenizer"]
    assert info["token_kind"] == "bpe" and info["vocab_size"] == 300 and info["merges"] == 300 - 257
    assert 0 < info["tokens_per_byte"] < 1 and len(info["longest_tokens"]) == 5
    assert "tokens_per_byte" in mypt("inspect", "b").out
    assert mypt("list", "--json").out.count('"bpe-300"') == 1
    r = mypt("predict", "--ckpt_path", "checkpoints/b", "--data.prompts", f"[{json.dumps(TRICKY, ensure_ascii=False)}]",
             "--trainer.enable_progress_bar", "false")  # fmt: skip
    assert r.code == 0 and TRICKY in r.out, r
    events = EventAccumulator("logs/b", size_guidance={"tensors": 0})
    events.Reload()
    samples = [
        make_ndarray(e.tensor_proto).item().decode() for e in events.Tensors(f"{SAMPLE_TAG}/text_summary")
    ]
    assert len(samples) == 1 and "🎉 日本語" in samples[0]

    # resume: the bundle's tokenizer, never retrained; the same cached ids
    r = _fit(mypt, "--ckpt_path", "checkpoints/b", "--trainer.max_steps", "12")
    assert LEARNING not in r.err and (saved / bundle.TOKENIZER_FILE).read_bytes() == tokenizer_json
    assert len(list(Path("token_cache").glob("*.json"))) == 1
    # a resume that would change the tokenizer is refused, like an architecture change
    before = snapshot()
    r = mypt("fit", "--ckpt_path", "checkpoints/b", "--trainer.max_steps", "14", "--data.vocab_size", "400")
    assert_one_error_line(r, "--data.vocab_size 400 conflicts with the saved tokenizer (300 tokens")
    assert r.code == 2 and snapshot() == before

    # fine-tune onto another text keeps the parent's BPE
    other = tmp_path / "other.txt"
    other.write_text("\n".join(reversed(dante_text(30_000).splitlines())), encoding="utf-8")
    r = _fit(mypt, "--model.init_from", "checkpoints/b", "--model_name", "child", "--data.input_file", other,
             "--trainer.max_steps", "2")  # fmt: skip
    assert LEARNING not in r.err
    assert Path("checkpoints/child/tokenizer.json").read_bytes() == tokenizer_json

    # the same text and settings learn a byte-identical tokenizer.json
    r = _fit(mypt, *BPE, "--data.input_file", bpe_text, "--model_name", "twin", "--trainer.max_steps", "1")
    assert Path("checkpoints/twin/tokenizer.json").read_bytes() == tokenizer_json


def _edit_tokenizer(path: Path, change) -> None:
    data = json.loads((path / bundle.TOKENIZER_FILE).read_text())
    change(data)
    (path / bundle.TOKENIZER_FILE).write_text(json.dumps(data))
    _rewrite_manifest(path, bundle.TOKENIZER_FILE)


def test_bpe_bad_inputs(mypt, bpe_text, tmp_path):
    for args, expect in (
        (("--data.vocab_size", "100"), "data.vocab_size 100 is out of range"),
        (("--data.vocab_size", "20000"), "more than this text supports"),
        (("--data.tokenizer", "char"), "--data.vocab_size sets the size of a bpe tokenizer"),
    ):
        r = mypt("fit", *TINY, *BPE, "--data.input_file", bpe_text, "--model_name", "bad", *args)
        assert_one_error_line(r, expect)
        assert r.code == 2 and not Path("checkpoints/bad").exists()
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a")
    r = mypt("fit", *TINY, *BPE, "--data.input_file", tiny, "--model_name", "bad")
    assert_one_error_line(r, "too small to learn any BPE merge")
    assert not Path("checkpoints/bad").exists()

    _fit(mypt, *BPE, "--data.input_file", bpe_text, "--model_name", "b", "--trainer.max_steps", "2")
    saved = Path("checkpoints/b")
    for change, expect in (
        (lambda d: d["tokenizer"]["model"]["vocab"].pop("Ġ"), "ids must be 0..n-1"),
        (lambda d: d["tokenizer"]["added_tokens"].clear(), "lacks its special token <|endoftext|>"),
        (lambda d: d["tokenizer"]["model"].update(merges=[["Ġ", "nonsense"]]), "does not load"),
    ):
        original = (saved / bundle.TOKENIZER_FILE).read_bytes(), (saved / bundle.MANIFEST_FILE).read_bytes()
        _edit_tokenizer(saved, change)
        before = snapshot()
        for args in (
            ("fit", "--ckpt_path", saved, "--trainer.max_steps", "4"),
            ("generate", "b"),
            ("inspect", "b"),
        ):
            assert_one_error_line(mypt(*args), expect)
        assert snapshot() == before
        (saved / bundle.TOKENIZER_FILE).write_bytes(original[0])
        (saved / bundle.MANIFEST_FILE).write_bytes(original[1])
    # a BPE of another size than config.json's vocabulary belongs to other weights
    _edit_tokenizer(saved, lambda d: d.update(train_bpe([dante_text(20_000)], 400).to_dict()))
    before = snapshot()
    assert_one_error_line(
        mypt("generate", "b"), "400-token BPE (448 rows padded) but config.json says vocab_size 320"
    )
    assert snapshot() == before


def test_a_large_training_split_is_sampled_evenly():
    chunks = [f"{i}é" * 10 + "\n" for i in range(10)]  # 31 bytes each
    assert list(sample_chunks(chunks, 310, sample_bytes=310)) == chunks
    assert list(sample_chunks(chunks, 310, sample_bytes=100)) == chunks[::4]  # every 4th chunk
    head = list(sample_chunks(chunks, 36, sample_bytes=1000))  # the split ends inside chunk 1
    assert head == [chunks[0], "1é1"] and len("".join(head).encode()) <= 36
    piece = dante_text(20_000)
    n = len(piece.encode())
    tokenizer = train_bpe(sample_chunks([piece] * 8, 8 * n, 2 * n), 300, text_bytes=8 * n)
    assert tokenizer.trained_on["text_bytes"] == 8 * n and tokenizer.trained_on["sample_bytes"] == 2 * n


def test_bpe_learns_from_the_training_split_of_a_compressed_jsonl(mypt, tmp_path):
    """A .jsonl.gz is far smaller on disk than its text: the BPE still learns from the first 90% of
    the records' text, not from 90% of the compressed size."""
    import gzip

    text = dante_text(30_000)
    records = [{"text": text[i : i + 500]} for i in range(0, len(text), 500)]
    path = tmp_path / "books.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    assert path.stat().st_size < len(text.encode()) / 2
    _fit(mypt, *BPE, "--data.input_file", path, "--model_name", "j", "--trainer.max_steps", "1")
    learnt_from = bundle.read_json(Path("checkpoints/j") / bundle.TOKENIZER_FILE)["trained_on"]["text_bytes"]
    text_bytes = sum(len(r["text"].encode()) for r in records)
    assert learnt_from == pytest.approx(0.9 * text_bytes, rel=0.01)
