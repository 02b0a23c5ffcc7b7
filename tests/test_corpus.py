"""A corpus as it lies: folders, globs, lists, JSONL/Parquet, token shards; documents joined by the
tokenizer's separator; validation from every document; a cache per file; exact GPT-2 chunk cuts."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, dante_text

from mypt import bundle, corpus, token_cache
from mypt.corpus import first_cut, open_shard, resolve_inputs
from mypt.data import Joined, TextDataModule, join
from mypt.errors import MyptError
from mypt.token_cache import load_corpus
from mypt.tokenizer import GPT2Tokenizer

TEXT = dante_text(21_000)  # the excerpt kept in tests/data: 19,987 characters
EOT = GPT2Tokenizer.eot_id


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_llmc(
    path: Path, ids, magic: int = corpus.LLMC_MAGIC, version: int = 1, n: int | None = None
) -> Path:
    header = np.zeros(256, dtype="<i4")
    header[:3] = [magic, version, len(ids) if n is None else n]
    return write(path, header.tobytes() + np.asarray(ids, dtype="<u2").tobytes())


def gpt2_ids(text: str) -> list[int]:
    """A document as nanoGPT and llm.c prepare it: its ids and an end-of-text token."""
    return [*GPT2Tokenizer().encode(text), EOT]


# ------------------------------------------------------------------ what the user names


def test_folders_globs_and_lists_name_files_in_a_stable_order(tmp_path):
    for name in ("b/2.md", "b/1.txt", "a.txt", "c.rst", ".hidden.txt", ".git/x.txt", "image.png", "notes"):
        write(tmp_path / "books" / name, "x\n")
    folder = [f.path.relative_to(tmp_path).as_posix() for f in resolve_inputs(str(tmp_path / "books"))]
    assert folder == ["books/a.txt", "books/b/1.txt", "books/b/2.md", "books/c.rst"]  # hidden, .png skipped
    globbed = resolve_inputs(str(tmp_path / "books" / "**" / "*.txt"))
    assert [f.path.name for f in globbed] == ["a.txt", "1.txt"]
    listed = resolve_inputs([str(tmp_path / "books" / "c.rst"), str(tmp_path / "books" / "notes")])
    assert [(f.path.name, f.kind) for f in listed] == [("c.rst", "text"), ("notes", "text")]  # named: read
    with pytest.raises(MyptError, match="named twice"):
        resolve_inputs([str(tmp_path / "books"), str(tmp_path / "books" / "a.txt")])
    write(tmp_path / "books" / "empty.txt", "")
    notes: list[str] = []
    assert len(resolve_inputs(str(tmp_path / "books"), notes)) == 4
    assert notes == [f"skipping the empty file {tmp_path / 'books' / 'empty.txt'}"]


def test_documents_are_joined_by_the_separator_and_validate_from_each(tmp_path):
    docs = [TEXT[:6000], TEXT[6000:13_000], TEXT[13_000:18_000]]
    for i, doc in enumerate(docs):
        write(tmp_path / "books" / f"{i}.txt", doc)
    dm = TextDataModule(input_file=str(tmp_path / "books"), batch_size=4, block_size=16)
    dm.setup("fit")
    tok = dm.tokenizer
    assert tok.chars[-1] == "\x00" and tok.eot_id == len(tok.chars) - 1  # NUL: last, never a text char
    assert tok.decode([tok.eot_id]) == ""  # generation never prints it
    assert tok.token_byte_lengths()[tok.eot_id] == 0  # a separator is no text: bits per byte ignore it
    train = dm.train_tokens[: len(dm.train_tokens)]
    val = dm.val_tokens[: len(dm.val_tokens)]
    assert int((train == tok.eot_id).sum()) == 2 and int((val == tok.eot_id).sum()) == 2
    val_docs = tok.decode(val.tolist()).split("\n")  # each document's last 10% validates
    for doc in docs:
        tail = doc[int(len(doc) * 0.9) :]
        assert tail in tok.decode(val.tolist()) and doc[: int(len(doc) * 0.9)] in tok.decode(train.tolist())
    assert val_docs
    # one file keeps the vocabulary and the positional split it always had
    single = TextDataModule(input_file=str(tmp_path / "books" / "0.txt"), batch_size=4, block_size=16)
    single.setup("fit")
    assert single.tokenizer.chars == sorted(set(docs[0])) and single.tokenizer.eot_id is None
    assert len(single.train_tokens) == int(len(docs[0]) * 0.9)
    # a held-out set: every input file trains whole
    write(tmp_path / "held_out.txt", TEXT[18_000:20_000])
    held = TextDataModule(
        input_file=str(tmp_path / "books"), val_files=str(tmp_path / "held_out.txt"), block_size=16
    )
    held.setup("fit")
    assert len(held.train_tokens) == sum(map(len, docs)) + 2 and len(held.val_tokens) == len(
        TEXT[18_000:20_000]
    )


def test_a_joined_stream_reads_windows_across_pieces():
    pieces = [
        np.arange(0, 5, dtype=np.uint16),
        np.arange(10, 13, dtype=np.uint16),
        np.arange(20, 30, dtype=np.uint16),
    ]
    stream = join(pieces, 99)
    whole = np.concatenate([pieces[0], [99], pieces[1], [99], pieces[2]])
    assert isinstance(stream, Joined) and len(stream) == len(whole)
    for start in range(len(whole) - 6):
        assert stream.read(start, 6).tolist() == whole[start : start + 6].tolist()
    assert stream[3:12].tolist() == whole[3:12].tolist()


# ------------------------------------------------------------------ the cache


def test_each_file_is_cached_alone_and_only_what_changed_is_tokenised(tmp_path, monkeypatch):
    written: list[str] = []
    original = token_cache._write_entry
    monkeypatch.setattr(
        token_cache, "_write_entry", lambda c, k, f, *a: written.append(f.path.name) or original(c, k, f, *a)
    )
    for i in range(3):
        write(tmp_path / "books" / f"{i}.txt", TEXT[i * 5000 : (i + 1) * 5000])

    def load():
        return load_corpus(resolve_inputs(str(tmp_path / "books")), "gpt2", cache_dir=tmp_path / "c")

    first = load()
    assert written == ["0.txt", "1.txt", "2.txt"] and not first.hit
    assert load().hit and len(written) == 3
    write(tmp_path / "books" / "1.txt", TEXT[15_000:20_000])
    write(tmp_path / "books" / "3.txt", TEXT[100:1100])
    again = load()
    assert written[3:] == ["1.txt", "3.txt"] and again.sha256 != first.sha256
    for f in again.files:
        assert f.tokens.tolist() == GPT2Tokenizer().encode(f.file.path.read_text(encoding="utf-8"))


def test_digests_are_remembered_only_for_files_that_have_been_still(tmp_path):
    path = write(tmp_path / "a.txt", "abc")
    memo = tmp_path / "c"
    first = corpus.file_digest(path, memo)
    assert not (memo / "digests").exists()  # just written: it may change again within the clock's tick
    write(path, "abd")  # the same size, maybe the same mtime
    assert corpus.file_digest(path, memo) == hashlib.sha256(b"abd").hexdigest() != first
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))
    corpus.file_digest(path, memo)
    (entry,) = (memo / "digests").iterdir()
    entry.write_text(entry.read_text().replace(hashlib.sha256(b"abd").hexdigest(), "f" * 64))
    assert corpus.file_digest(path, memo) == "f" * 64  # trusted while size, mtime and inode hold
    write(path, "xyz")
    assert corpus.file_digest(path, memo) == hashlib.sha256(b"xyz").hexdigest()


def test_chunk_cuts_keep_gpt2_ids_exact_inside_a_newline_run(tmp_path, monkeypatch):
    """A chunk that ended inside "\\n\\n" + a word encoded [628] where the whole text has [198, 198]."""
    assert GPT2Tokenizer().encode("x\n\nword") == [87, 198, 198, 4775]
    assert GPT2Tokenizer().encode("x\n\n") == [87, 628]
    text = (
        "Nel mezzo del cammin di nostra vita\n\n\nmi ritrovai  per una selva oscura,\n\n" * 60
    ) + "  \n \n"
    path = write(tmp_path / "runs.txt", text)
    for chunk in (7, 37, 38, 39, 40, 41, 64, 100):  # cut points land inside and beside newline runs
        monkeypatch.setattr(token_cache, "CHUNK_BYTES", chunk)
        ids = token_cache.load_tokens(path, "gpt2", cache_dir=tmp_path / f"c{chunk}").tokens
        assert ids.tolist() == GPT2Tokenizer().encode(text), chunk
        assert "".join(corpus.iter_text_chunks(path, chunk)) == text
    assert first_cut(b"ab\n\ncd") == 3 and first_cut(b"ab\n\n") == -1 and first_cut(b"a b") == 1


def test_many_cores_tokenise_as_one_does(tmp_path, monkeypatch):
    path = write(tmp_path / "dante.txt", TEXT)
    serial = token_cache.load_tokens(path, "char", cache_dir=tmp_path / "one").tokens
    monkeypatch.setattr(token_cache, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(token_cache, "CHUNK_BYTES", 2000)
    files = resolve_inputs(str(path))
    pooled = load_corpus(files, "char", cache_dir=tmp_path / "two", workers=2)
    assert pooled.files[0].tokens.tolist() == serial.tolist()


# ------------------------------------------------------------------ JSONL, Parquet, shards


def test_jsonl_and_parquet_records_are_documents(tmp_path):
    records = [{"text": TEXT[i * 500 : (i + 1) * 500], "id": i} for i in range(6)]
    write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in records[:3]) + "\n\n")
    (tmp_path / "b.jsonl.gz").write_bytes(
        gzip.compress("\n".join(json.dumps(r) for r in records[3:]).encode())
    )
    files = resolve_inputs([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl.gz")])
    loaded = load_corpus(files, "gpt2", cache_dir=tmp_path / "c")
    ids = [int(i) for i in loaded.files[0].tokens]
    enc = GPT2Tokenizer().encode
    assert ids == enc(records[0]["text"]) + [EOT] + enc(records[1]["text"]) + [EOT] + enc(records[2]["text"])
    assert int((loaded.files[1].tokens == EOT).sum()) == 2
    write(tmp_path / "c.jsonl", '{"body": "x"}\n')
    with pytest.raises(MyptError, match=r"c.jsonl line 1 has no text field 'text'"):
        load_corpus(resolve_inputs(str(tmp_path / "c.jsonl")), "gpt2", cache_dir=tmp_path / "c")
    assert load_corpus(
        resolve_inputs(str(tmp_path / "c.jsonl")), "char", cache_dir=tmp_path / "c", text_field="body"
    )

    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"text": [r["text"] for r in records]}), tmp_path / "d.parquet", row_group_size=4)
    parquet = load_corpus(resolve_inputs(str(tmp_path / "d.parquet")), "gpt2", cache_dir=tmp_path / "c")
    assert int((parquet.files[0].tokens == EOT).sum()) == 5
    assert len(parquet.files[0].tokens) == sum(len(enc(r["text"])) for r in records) + 5


def test_token_shards_are_mapped_and_checked(tmp_path):
    ids = gpt2_ids(TEXT[:3000])
    llmc = write_llmc(tmp_path / "fineweb_train_000001.bin", ids)
    raw = write(tmp_path / "train.bin", np.asarray(ids, dtype="<u2").tobytes())
    for path in (llmc, raw):
        tokens = open_shard(path)
        assert isinstance(tokens, np.memmap) and tokens.tolist() == ids
    bad = {
        "version": (write_llmc(tmp_path / "v.bin", ids, version=2), "version 2"),
        "truncated": (write_llmc(tmp_path / "t.bin", ids, n=len(ids) + 10), "truncated"),
        "short header": (
            write(tmp_path / "h.bin", np.asarray([corpus.LLMC_MAGIC], "<i4").tobytes()),
            "truncated",
        ),
        "odd size": (write(tmp_path / "o.bin", b"\x01\x02\x03"), "odd size"),
        "id >= vocab": (
            write(tmp_path / "i.bin", np.asarray([1, 2, 60000], "<u2").tobytes()),
            "holds id 60000 at token 2",
        ),
    }
    for path, expect in bad.values():
        with pytest.raises(MyptError, match=expect):
            open_shard(path)


# ------------------------------------------------------------------ through `mypt fit`


def test_fit_on_a_folder_glob_list_jsonl_and_parquet_then_resume_after_the_folder_changed(mypt, tmp_path):
    write(tmp_path / "books" / "inferno.txt", TEXT[:5000])
    write(tmp_path / "books" / "sub" / "purgatorio.md", TEXT[5000:10_000])
    write(tmp_path / "more" / "paradiso.txt", TEXT[10_000:15_000])
    write(
        tmp_path / "notes.jsonl",
        "\n".join(json.dumps({"text": TEXT[i : i + 1000]}) for i in range(15_000, 18_000, 1000)),
    )
    inputs = ["books", "more/*.txt", "notes.jsonl"]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": [TEXT[18_000:19_000], TEXT[19_000:]]}), tmp_path / "x.parquet")
        inputs.append("x.parquet")
    except ImportError:
        pass
    spec = "[" + ", ".join(inputs) + "]"
    r = mypt("fit", *TINY, "--data.input_file", spec, "--model_name", "mix", "--trainer.max_steps", "4")
    assert r.code == 0, r
    data = bundle.load_training_state(Path("checkpoints/mix"))["data"]
    n = 3 + 1 + (len(inputs) == 4)
    assert data["input_file"] == inputs and data["n_files"] == n and len(data["files"]) == n
    assert data["files"][0]["path"] == str(tmp_path / "books" / "inferno.txt")
    # bytes are the text's, UTF-8: a text file's size, a JSONL/Parquet file's records (not its JSON)
    text_bytes = len(TEXT[:15_000].encode("utf-8")) + sum(
        len(TEXT[i : i + 1000].encode("utf-8")) for i in range(15_000, 18_000, 1000)
    )
    text_bytes += len(TEXT[18_000:].encode("utf-8")) if len(inputs) == 4 else 0
    assert data["total_bytes"] == sum(f["bytes"] for f in data["files"]) == text_bytes
    assert data["total_file_bytes"] == sum(os.path.getsize(f["path"]) for f in data["files"]) != text_bytes
    tokenizer = json.loads(Path("checkpoints/mix/tokenizer.json").read_text())
    assert tokenizer["chars"][-1] == "\x00"

    write(tmp_path / "books" / "inferno.txt", TEXT[:4500])  # edited
    write(tmp_path / "books" / "vita_nova.txt", TEXT[100:3000])  # added
    (tmp_path / "books" / "sub" / "purgatorio.md").unlink()  # gone
    r = mypt("fit", "--ckpt_path", "checkpoints/mix", "--trainer.max_steps", "6")
    assert r.code == 0, r
    line = next(x for x in r.out.splitlines() if "input files changed" in x)
    assert (
        "1 changed (books/inferno.txt); 1 added (books/vita_nova.txt); 1 gone (books/sub/purgatorio.md)"
        in line
    )
    assert bundle.load_training_state(Path("checkpoints/mix"))["data"]["n_files"] == n


def test_fit_on_nanogpt_and_llmc_shards(mypt, tmp_path):
    write_llmc(tmp_path / "shards" / "fineweb_val_000000.bin", gpt2_ids(TEXT[:2000]))
    write_llmc(tmp_path / "shards" / "fineweb_train_000001.bin", gpt2_ids(TEXT[2000:8000]))
    write(tmp_path / "shards" / "train.bin", np.asarray(gpt2_ids(TEXT[8000:14_000]), "<u2").tobytes())
    args = ("fit", *TINY, "--model.n_embd", "16", "--trainer.max_steps", "2", "--model_name", "shards")
    r = mypt(*args, "--data.input_file", "shards")
    assert r.code == 2 and "--data.tokenizer gpt2" in r.err, r
    r = mypt(*args, "--data.input_file", "shards", "--data.tokenizer", "gpt2")
    assert r.code == 0, r
    data = bundle.load_training_state(Path("checkpoints/shards"))["data"]
    n_val = len(gpt2_ids(TEXT[:2000]))
    assert data["n_val_tokens"] == n_val  # the val shard validates; the two train shards train whole
    assert data["n_train_tokens"] == len(gpt2_ids(TEXT[2000:8000])) + len(gpt2_ids(TEXT[8000:14_000]))
    assert data["total_bytes"] == len(TEXT[:14_000].encode("utf-8"))  # the text the ids decode to


def test_mypt_data_tokenises_ahead_and_describes_the_corpus(mypt, tmp_path):
    write(tmp_path / "books" / "inferno.txt", TEXT[:5000])
    write(
        tmp_path / "notes.jsonl",
        "\n".join(json.dumps({"text": TEXT[i : i + 500]}) for i in range(0, 2000, 500)),
    )
    r = mypt("data", "books", "notes.jsonl")
    assert r.code == 0, r
    jsonl = 2000 + 3  # characters and record separators
    expected = [
        "documents    5",  # one text file, four records
        f"tokens       {5000 + jsonl + 2:,}",  # a separator between the files in each split
        f"train / val  {4500 + 1 + int(jsonl * 0.9):,} / {500 + 1 + jsonl - int(jsonl * 0.9):,} tokens",
        "separator '\\x00'",
        f"cache        {tmp_path / 'token_cache'}",
    ]
    for line in expected:
        assert line in r.out, (line, r.out)
    assert "already tokenised" in mypt("data", "books", "notes.jsonl").out
    r = mypt("data", "books/*.nothing")
    assert r.code == 2 and r.err.startswith(
        "mypt: error: input file pattern 'books/*.nothing' matches no file"
    )


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as when pyarrow is absent
    path = write(tmp_path / "rows.parquet", b"PAR1")
    with pytest.raises(
        MyptError, match=r"rows.parquet is Parquet, which needs pyarrow: pip install 'mypt\[data\]'"
    ):
        load_corpus(resolve_inputs(str(path)), "gpt2", cache_dir=tmp_path / "c")


# ------------------------------------------------------------------ links, globs, extensions, flags


def test_a_link_to_a_sibling_folder_is_no_loop_and_its_files_are_read_once(mypt, tmp_path):
    write(tmp_path / "sym" / "real" / "a.txt", TEXT[:3000])
    write(tmp_path / "sym" / "other" / "b.txt", TEXT[3000:5000])
    (tmp_path / "sym" / "other" / "link").symlink_to("../real")
    r = mypt("data", "sym")
    assert r.code == 0, r
    assert "documents    2" in r.out  # a.txt once, though reached as other/link/a.txt too
    assert f"({len(TEXT[:5000].encode('utf-8')):,} bytes of text)" in r.out, r.out
    assert r.err.count("mypt: note:") == 1 and "sym/other/link/a.txt" in r.err and "read once" in r.err, r
    (tmp_path / "sym" / "real" / "up").symlink_to("..")  # sym/real/up -> sym: its own ancestor
    r = mypt("data", "sym")
    assert (
        r.code == 2
        and "symlink loop at sym/other/link/up (a link back to sym)" in r.err
        and r.err.count("\n") == 1
    ), r


def test_a_glob_that_matches_a_file_and_a_link_to_it_reads_the_file_once(mypt, tmp_path):
    write(tmp_path / "lib" / "a.py", TEXT[:3000])
    write(tmp_path / "lib" / "pkg" / "b.py", TEXT[3000:5000])
    (tmp_path / "lib" / "alias.py").symlink_to("a.py")
    r = mypt("data", "lib/**/*.py")
    assert r.code == 0, r
    assert "documents    2" in r.out, r.out
    notes = [line for line in r.err.splitlines() if line.startswith("mypt: note:")]
    assert len(notes) == 1 and "lib/alias.py" in notes[0] and "lib/a.py" in notes[0], r
    r = mypt("data", "lib/a.py", "lib/a.py")  # the user named it twice: still an error
    assert r.code == 2 and "named twice" in r.err, r


def test_a_folder_walk_keeps_the_extensions_asked_for(mypt, tmp_path):
    write(tmp_path / "code" / "a.py", TEXT[:3000])
    write(tmp_path / "code" / "sub" / "b.py", TEXT[3000:5000])
    write(tmp_path / "code" / "c.json", "{}")
    r = mypt("data", "code")
    assert r.code == 2 and r.err.count("\n") == 1, r
    assert "code holds no text files" in r.err and "it holds .py (2 files), .json (1 file)" in r.err, r
    assert "--extensions .py" in r.err and "'code/**/*.py'" in r.err and "--data." not in r.err, r
    r = mypt("data", "--extensions", ".py", "code")  # before the paths: it takes one value, not the paths
    assert r.code == 0 and "documents    2" in r.out, r
    r = mypt("data", "code", "--extensions", "py,JSON")  # with or without the dot, any case
    assert r.code == 0 and "documents    3" in r.out, r
    r = mypt("data", "code", "--extensions", "py", "--extensions", ".json")  # or repeated
    assert r.code == 0 and "documents    3" in r.out, r
    # mypt fit: the same error names its own flag; --data.extensions takes the files, and a resume
    # keeps the endings it was trained with
    args = ("fit", *TINY, "--data.input_file", "code", "--model_name", "code")
    r = mypt(*args, "--trainer.max_steps", "1")
    assert r.code == 2 and "--data.extensions '[.py]'" in r.err, r
    r = mypt(*args, "--trainer.max_steps", "1", "--data.extensions", "[.py]")
    assert r.code == 0, r
    data = bundle.load_training_state(Path("checkpoints/code"))["data"]
    assert data["extensions"] == [".py"] and data["n_files"] == 2
    r = mypt("fit", "--ckpt_path", "checkpoints/code", "--trainer.max_steps", "2")
    assert r.code == 0 and "data.extensions" not in r.out, r  # kept, so not in the table of changes


def test_mypt_data_errors_name_its_own_flags(mypt, tmp_path):
    write(tmp_path / "a.txt", TEXT[:3000])
    write(tmp_path / "b.jsonl", '{"body": "x"}\n')
    write_llmc(tmp_path / "shards" / "train.bin", gpt2_ids(TEXT[:2000]))
    for args, flag in (
        (("a.txt", "--vocab_size", "300"), "--vocab_size"),
        (("a.txt", "--vocab_size", "300"), "--tokenizer bpe"),
        (("b.jsonl",), "--text_field"),
        (("shards",), "--tokenizer gpt2"),
        (("a.txt", "--tokenizer", "bpe", "--vocab_size", "100"), "--vocab_size 100 is out of range"),
        (("a.txt", "--tokenizer", "bpe", "--vocab_size", "20000"), "choose --vocab_size"),
    ):
        r = mypt("data", *args)
        assert r.code == 2 and flag in r.err and "--data." not in r.err, (args, r)
    r = mypt("fit", *TINY, "--data.input_file", "a.txt", "--data.vocab_size", "300")
    assert r.code == 2 and "--data.vocab_size" in r.err and "--data.tokenizer bpe" in r.err, r


def test_bytes_are_the_texts_utf8_bytes_for_compressed_jsonl_and_shards(mypt, tmp_path):
    records = [TEXT[i : i + 700] for i in range(0, 7000, 700)]
    (tmp_path / "chats.jsonl.gz").write_bytes(
        gzip.compress("\n".join(json.dumps({"text": t}) for t in records).encode())
    )
    text_bytes = sum(len(t.encode("utf-8")) for t in records)
    assert os.path.getsize(tmp_path / "chats.jsonl.gz") < text_bytes / 2  # what was counted before
    n_tokens = sum(map(len, records)) + len(records) - 1  # characters and record separators
    r = mypt("data", "chats.jsonl.gz")
    assert r.code == 0, r
    assert f"({text_bytes:,} bytes of text" in r.out, r.out
    assert f"tokens       {n_tokens:,} ({n_tokens / text_bytes:.3f} tokens/byte)" in r.out, r.out
    assert "already tokenised" in mypt("data", "chats.jsonl.gz").out  # the count is cached with the ids
    assert f"({text_bytes:,} bytes of text" in mypt("data", "chats.jsonl.gz").out
    write_llmc(tmp_path / "shards" / "a_train_000001.bin", gpt2_ids(TEXT[:3000]))
    r = mypt("data", "shards", "--tokenizer", "gpt2")
    assert r.code == 0 and f"({len(TEXT[:3000].encode('utf-8')):,} bytes of text" in r.out, r


def test_json_errors_say_where_once(mypt, tmp_path):
    write(tmp_path / "bad.jsonl", '{"text": "a\tb"}\n')
    r = mypt("data", "bad.jsonl")
    assert r.code == 2 and "bad.jsonl line 1 is not JSON (Invalid control character at column 12)" in r.err, r
    write(tmp_path / "m" / "config.json", '{"n_layer": "a\tb"}')
    write(tmp_path / "m" / "tokenizer.json", "{}")
    r = mypt("inspect", "m")
    assert (
        r.code == 2
        and "config.json is not valid JSON (Invalid control character at line 1 column 15)" in r.err
    ), r
    write(tmp_path / "m" / "config.json", '{"n_layer": "ab')
    r = mypt("inspect", "m")
    assert r.code == 2 and "(Unterminated string starting at line 1 column 13)" in r.err, r
