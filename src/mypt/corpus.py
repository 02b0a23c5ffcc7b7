"""What the user names, turned into input files and their documents.

`--data.input_file` takes a file, a folder, a glob, or a list of any of these. The rule:

- a **file** is taken whatever its name (a name without a known ending is read as UTF-8 text);
- a **folder** is walked recursively in sorted order, skipping hidden files and folders (names that
  start with "."), and keeps the files whose name ends in one of ``--data.extensions``; by default
  the known endings: text (``.txt .text .md .markdown .rst .tex .org .adoc .asciidoc``), JSONL
  (``.jsonl .jsonl.gz``), Parquet (``.parquet``) and token shards (``.bin``). Symlinked folders are
  followed; a link back to one of its own ancestors is a loop and an error, and a file reached
  twice (through a link to a sibling folder, say) is read once, with a note;
- a **glob** (``*``, ``?``, ``[``; ``**`` crosses folders) is expanded in sorted order, and a folder
  it matches is walked as above; a file it reaches twice (itself and a symlink to it) is read once,
  with a note;
- the entries of a list keep their order; the same file named by two entries is an error.

A text file is one document; each JSONL line and each Parquet row is one document (its ``text``
field, or ``--data.text_field``). Token shards (nanoGPT's ``train.bin``/``val.bin``: raw uint16
GPT-2 ids; llm.c's shards: a 256 x int32 header with magic 20240520, version 1 and the token count,
then uint16 ids) are memory-mapped as they are, never copied.

An empty file among several is skipped with a note; an empty file named alone is an error.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from mypt.errors import MyptError, json_error_text

TEXT_SUFFIXES = (".txt", ".text", ".md", ".markdown", ".rst", ".tex", ".org", ".adoc", ".asciidoc")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
PARQUET_SUFFIXES = (".parquet",)
SHARD_SUFFIXES = (".bin",)
_KNOWN = {
    **dict.fromkeys(TEXT_SUFFIXES, "text"),
    **dict.fromkeys(JSONL_SUFFIXES, "jsonl"),
    **dict.fromkeys(PARQUET_SUFFIXES, "parquet"),
    **dict.fromkeys(SHARD_SUFFIXES, "shard"),
}
DEFAULT_EXTENSIONS = tuple(_KNOWN)  # what a folder walk keeps unless --data.extensions says otherwise
LLMC_MAGIC = 20240520
LLMC_VERSION = 1
LLMC_HEADER_INTS = 256
GPT2_SHARD_VOCAB = 50257  # ids in a shard are GPT-2's; anything at or above is damage


@dataclass(frozen=True)
class Flags:
    """How the running command spells the data options in its messages: `mypt fit` takes
    ``--data.vocab_size`` and YAML lists, `mypt data` takes ``--vocab_size`` and words."""

    prefix: str = "--data."
    yaml_lists: bool = True

    def __call__(self, name: str) -> str:
        return self.prefix + name

    def with_values(self, name: str, values: list[str]) -> str:
        if self.yaml_lists:
            return f"{self.prefix}{name} '[{', '.join(values)}]'"
        return f"{self.prefix}{name} {' '.join(values)}"


FIT_FLAGS = Flags()
DATA_FLAGS = Flags("--", yaml_lists=False)  # `mypt data`'s own options
# Errors are raised deep in the readers (a JSONL line without its field, a folder of .py files);
# the command sets this once instead of threading its spelling through every call.
flags: ContextVar[Flags] = ContextVar("flags", default=FIT_FLAGS)


def flag(name: str) -> str:
    """The option `name` as the running command spells it (`--data.text_field` or `--text_field`)."""
    return flags.get()(name)


@dataclass(frozen=True)
class InputFile:
    """One file of the corpus: its path (as found from what the user named), its reader, its size."""

    path: Path
    kind: str  # "text" | "jsonl" | "parquet" | "shard"
    size: int  # on disk; the text's own bytes are counted as it is read (token_cache, data)

    @property
    def name(self) -> str:
        return str(self.path)


def normalise_spec(spec: str | os.PathLike | list | tuple | None) -> list[str]:
    """The entries a user named, as a list of strings (a single path becomes a list of one)."""
    if spec is None:
        return []
    if isinstance(spec, str | os.PathLike):
        return [os.fspath(spec)]
    return [os.fspath(s) for s in spec]


def absolute_spec(spec: str | list | None) -> str | list | None:
    """The same spec with each entry made absolute (globs too), for a resume from another folder."""
    if spec is None:
        return None
    absolute = [os.path.abspath(s) for s in normalise_spec(spec)]
    return absolute[0] if isinstance(spec, str | os.PathLike) else absolute


def spec_exists(spec: str | list | None) -> bool:
    """Whether every entry names something here (a glob: that it matches)."""
    entries = normalise_spec(spec)
    return bool(entries) and all(
        os.path.exists(e) or (is_glob(e) and glob.glob(e, recursive=True)) for e in entries
    )


def url_for(input_file, url: str | None, config_files=None, saved: dict | None = None) -> str | None:
    """The url to download `input_file` from, or None. A url is for the input_file configured beside
    it (in the same --config file, or the resumed bundle's data record), not for one named instead:
    `--config configs/dante_cpu.yaml --data.input_file notes.txt` never downloads Dante into notes.txt."""
    if not url:
        return url
    owners = []
    for config in config_files or []:
        try:
            content = config.get_content() if hasattr(config, "get_content") else Path(config).read_text()
            data = (yaml.safe_load(content) or {}).get("data")
        except (OSError, yaml.YAMLError, AttributeError):
            continue  # jsonargparse has read it already; what it could not read is its error
        if isinstance(data, dict) and data.get("url") == url:
            owners.append(data.get("input_file"))
    if saved and saved.get("url") == url:
        owners += [saved.get("input_file"), saved.get("input_path")]
    return None if owners and input_file not in owners else url


def is_glob(entry: str) -> bool:
    return any(c in entry for c in "*?[")


def reader_of(path: Path) -> str:
    name = path.name.lower()
    for suffix, kind in sorted(_KNOWN.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return kind
    return "text"


def normalise_extensions(extensions: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The endings a folder walk keeps, lower case with their dot (``py`` -> ``.py``)."""
    if extensions is None:
        return DEFAULT_EXTENSIONS
    if isinstance(extensions, str):
        extensions = [extensions]
    out = []
    for e in extensions:
        e = str(e).strip().lower()
        if not e.strip("."):
            raise MyptError(f"{flag('extensions')}: {e!r} is not a file ending (write .py, or py)")
        out.append(e if e.startswith(".") else "." + e)
    if not out:
        raise MyptError(f"{flag('extensions')} is empty: name at least one ending (.txt, .py, ...)")
    return tuple(dict.fromkeys(out))


def _ending(name: str) -> str:
    """A file's ending as a walk reports it: ``.py``, ``.jsonl.gz``, or "" for none."""
    suffixes = Path(name.lower()).suffixes
    return "".join(suffixes[-2:]) if len(suffixes) > 1 and suffixes[-1] == ".gz" else "".join(suffixes[-1:])


def resolve_inputs(
    spec, notes: list[str] | None = None, what: str = "input file", extensions=None
) -> list[InputFile]:
    """Every file `spec` names, in order. A file one entry reaches twice through symlinks is kept
    once and said in `notes`, as are empty files among several; every other problem is a MyptError
    naming the entry."""
    entries = normalise_spec(spec)
    if not entries:
        raise MyptError(f"no {what}: set {flag('input_file')} (or give a config that does)")
    keep = normalise_extensions(extensions)
    found: list[Path] = []
    folded: list[tuple[Path, Path]] = []  # (the path dropped, the path kept)
    for entry in entries:
        found += _once(_expand(entry, what, keep, notes), folded)
    if folded and notes is not None:
        shown = ", ".join(f"{dropped} (= {kept})" for dropped, kept in folded[:3])
        more = f" and {len(folded) - 3} more" if len(folded) > 3 else ""
        n = len(folded)
        notes.append(
            f"{n} file{'s' if n > 1 else ''} reached twice through symlinks, read once: {shown}{more}"
        )
    seen: dict[str, Path] = {}
    for path in found:
        real = os.path.realpath(path)
        if real in seen:
            raise MyptError(f"{what} {path} is named twice (also as {seen[real]}); name each file once")
        seen[real] = path
    files = []
    for path in found:
        size = path.stat().st_size
        if size == 0:
            if len(found) == 1:
                raise MyptError(f"{what} {path} is empty")
            if notes is not None:
                notes.append(f"skipping the empty file {path}")
            continue
        files.append(InputFile(path, reader_of(path), size))
    if not files:
        raise MyptError(f"every {what} named by {', '.join(entries)} is empty")
    kinds = {f.kind == "shard" for f in files}
    if len(kinds) > 1:
        raise MyptError(
            "token shards (.bin) cannot be mixed with text, JSONL or Parquet inputs: shards hold GPT-2 ids "
            "already; name either the shards or the documents"
        )
    return files


def _once(paths: list[Path], folded: list[tuple[Path, Path]]) -> list[Path]:
    """`paths` with each file once: of the paths that reach one file, the one without a symlink on
    the way (or else the first) is kept, in its place; the others go to `folded`."""
    reals = [os.path.realpath(p) for p in paths]
    groups: dict[str, list[Path]] = {}
    for p, real in zip(paths, reals, strict=True):
        groups.setdefault(real, []).append(p)
    chosen = {}
    for real, group in groups.items():
        direct = [p for p in group if os.path.abspath(p) == real] if len(group) > 1 else group
        chosen[real] = (direct or group)[0]
        folded += [(p, chosen[real]) for p in group if p is not chosen[real]]
    return [p for p, real in zip(paths, reals, strict=True) if chosen[real] is p]


def _expand(entry: str, what: str, keep: tuple[str, ...], notes: list[str] | None) -> list[Path]:
    path = Path(entry)
    if path.is_dir():
        return _walk(path, what, keep, notes).files(entry)
    if path.is_file():
        return [path]
    if os.path.lexists(entry) and not path.exists():
        raise MyptError(f"{what} {entry} is a broken or looping symlink")
    if path.exists():
        raise MyptError(f"{what} {entry} is not a regular file")
    if is_glob(entry):
        matches = sorted(glob.glob(entry, recursive=True))
        if not matches:
            raise MyptError(f"{what} pattern {entry!r} matches no file")
        out: list[Path] = []
        walks = _Walk(Path(entry), what)
        for m in matches:
            p = Path(m)
            if p.is_dir():
                walk = _walk(p, what, keep, notes)
                out += walk.paths
                walks.add(walk)
            elif p.is_file():
                out.append(p)
        if not out:
            if walks.unkept:
                walks.files(entry)  # the error that names the endings found
            raise MyptError(f"{what} pattern {entry!r} matches no file")
        return out
    raise MyptError(f"{what} {entry} does not exist")


class _Walk:
    """What a folder walk found: the files it keeps, and a count of the endings it left."""

    def __init__(self, folder: Path, what: str) -> None:
        self.folder, self.what = folder, what
        self.paths: list[Path] = []
        self.unkept: Counter[str] = Counter()
        self.keep: tuple[str, ...] = ()

    def add(self, other: _Walk) -> None:
        self.unkept.update(other.unkept)
        self.keep = other.keep

    def files(self, named: str) -> list[Path]:
        """The files kept, or the error that says what the folder holds and how to take it."""
        if self.paths:
            return self.paths
        if not self.unkept:
            raise MyptError(f"{self.what} folder {named} is empty")
        common = [e for e, _ in self.unkept.most_common() if e][:5]
        held = ", ".join(
            f"{e or 'no ending'} ({n} file{'s' if n > 1 else ''})" for e, n in self.unkept.most_common(5)
        )
        default = self.keep == DEFAULT_EXTENSIONS
        kept = f"the {'default ' if default else ''}endings {' '.join(self.keep)}"
        if common:
            pattern = os.path.join(named, "**", f"*{common[0]}")
            take = (
                f"to read them, choose the endings with {flags.get().with_values('extensions', common[:1])} "
                f"or name them with a quoted glob such as '{pattern}'"
            )
        else:
            take = "name the files themselves to read them whatever their ending"
        where = f"pattern {named!r} matches folders that hold" if is_glob(named) else f"folder {named} holds"
        raise MyptError(f"{self.what} {where} no text files ({kept}): it holds {held}; {take}")


def _walk(folder: Path, what: str, keep: tuple[str, ...], notes: list[str] | None) -> _Walk:
    """The files under `folder` whose ending is in `keep`, recursively, sorted, hidden names
    skipped. Symlinked folders are followed: only a link to one of its own ancestors is a loop (an
    error); a folder reached twice through links is walked twice and its files are kept once by the
    caller. Folders that cannot be read are skipped with a note."""
    walk = _Walk(folder, what)
    walk.keep = keep

    def visit(d: Path, ancestors: dict[str, Path]) -> None:
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as e:
            if notes is not None:
                notes.append(f"skipping the folder {d}: {e.strerror or e}")
            return
        for e in entries:
            if e.name.startswith("."):
                continue
            p = d / e.name
            try:
                is_dir, is_file = e.is_dir(), e.is_file()  # both follow symlinks
            except OSError:
                continue
            if is_dir:
                real = os.path.realpath(p)
                if real in ancestors:
                    raise MyptError(
                        f"{what} folder {folder}: symlink loop at {p} (a link back to {ancestors[real]})"
                    )
                visit(p, {**ancestors, real: p})
            elif is_file:
                if e.name.lower().endswith(keep):
                    walk.paths.append(p)
                else:
                    walk.unkept[_ending(e.name)] += 1

    visit(folder, {os.path.realpath(folder): folder})
    walk.paths.sort(key=lambda p: p.relative_to(folder).parts)  # as a recursive listing shows them
    return walk


# -- digests ----------------------------------------------------------------------------------


def file_digest(path: Path, memo_dir: Path | None = None) -> str:
    """The sha256 of a file. With `memo_dir`, a digest already computed for the same file (path, size,
    modification time in ns and inode unchanged, as git's index trusts) is reused: hashing a 1 GB
    corpus takes seconds, which a cached start should not pay."""
    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    memo_file = None
    if memo_dir is not None:
        key = hashlib.sha256(os.path.realpath(path).encode()).hexdigest()[:32]
        memo_file = memo_dir / "digests" / f"{key}.json"
        try:
            memo = json.loads(memo_file.read_text())
            if memo["stamp"] == stamp:
                return memo["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    # A file modified in the last seconds may change again within the clock's granularity (a few
    # ms) keeping its stamp: git's "racily clean" case. Only a file that has been still is memoised.
    if memo_file is not None and time.time() - st.st_mtime > 2:
        try:
            memo_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_file.with_name(f".{memo_file.name}.{uuid.uuid4().hex[:8]}")
            tmp.write_text(json.dumps({"stamp": stamp, "sha256": digest}))
            os.replace(tmp, memo_file)
        except OSError:
            pass  # the memo only saves time
    return digest


def combined_digest(digests: list[str]) -> str:
    """One sha256 for an ordered list of files: a single file's is its own (as bundles always said)."""
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


# -- text -------------------------------------------------------------------------------------


def check_text(data: bytes, path: Path, offset: int) -> str:
    """`data` (read from `path` at byte `offset`) as text, or the error naming where it is not."""
    if b"\x00" in data:
        raise MyptError(
            f"input file {path} looks binary (NUL byte at offset {offset + data.index(0)}), not text"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MyptError(
            f"input file {path} is not UTF-8 text (bad byte at offset {offset + e.start})"
        ) from None


_SAFE_NEXT = bytes(range(0x21, 0x7F))  # printable ASCII, no space: non-whitespace in every definition


def first_cut(data: bytes) -> int:
    """The first position p in `data` where text may be cut so that each side tokenises as the
    whole does (a newline preferred to a space), or -1.

    p is a single space or newline followed by a printable ASCII character. GPT-2's pre-tokeniser
    (r50k: ``...| ?\\p{L}+|...|\\s+(?!\\S)|\\s+``) ends a piece at p whatever came before: a
    whitespace run before p is matched by ``\\s+(?!\\S)`` up to p (the char at p is whitespace), a
    non-whitespace run cannot extend over it, and from p on the pieces do not look back. Cutting
    after a newline instead was wrong: "x\\n\\n" at the end of a chunk encodes [628] where the whole
    text, with a word after it, encodes [198, 198]."""
    for sep in (b"\n", b" "):
        p = data.find(sep, 0, len(data) - 1)
        while p >= 0:
            if data[p + 1] in _SAFE_NEXT:
                return p
            p = data.find(sep, p + 1, len(data) - 1)
    return -1


def text_ranges(path: Path, chunk_bytes: int) -> Iterator[tuple[int, int]]:
    """(start, end) byte ranges of about `chunk_bytes` that cover the file, cut by `first_cut`; a
    stretch without a place to cut stays whole."""
    size = path.stat().st_size
    start = 0
    with open(path, "rb") as f:
        while start < size:
            target = start + chunk_bytes
            if target >= size:
                yield start, size
                return
            f.seek(target)
            window = 1 << 16
            while True:
                data = f.read(window)
                if len(data) < 2:  # the end of the file: no place left to cut
                    yield start, size
                    return
                cut = first_cut(data)
                if cut >= 0:
                    end = target + cut
                    yield start, end
                    start = end
                    break
                target += len(data) - 1  # keep one byte: a cut needs the byte after it
                f.seek(target)


def read_text(path: Path, start: int, end: int) -> str:
    with open(path, "rb") as f:
        f.seek(start)
        return check_text(f.read(end - start), path, start)


def iter_text_chunks(path: Path, chunk_bytes: int) -> Iterator[str]:
    """The text of a file in pieces of about `chunk_bytes`, cut where tokenisation does not change."""
    for start, end in text_ranges(path, chunk_bytes):
        yield read_text(path, start, end)


_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)


def strip_gutenberg(text: str) -> str:
    """The book without Project Gutenberg's licence header and footer, when they are present."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip("\r\n") + "\n" if (start or end) else text


# -- JSONL and Parquet ------------------------------------------------------------------------


def iter_jsonl_documents(path: Path, field: str) -> Iterator[str]:
    """The `field` of each line of a .jsonl (or .jsonl.gz) file; blank lines are skipped."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except UnicodeDecodeError as e:
                    raise MyptError(
                        f"{path} line {number} is not JSON: not UTF-8 text (bad byte at column {e.start + 1})"
                    ) from None
                except json.JSONDecodeError as e:
                    raise MyptError(
                        f"{path} line {number} is not JSON ({json_error_text(e, one_line=True)})"
                    ) from None
                if not isinstance(record, dict) or not isinstance(record.get(field), str):
                    raise MyptError(
                        f"{path} line {number} has no text field {field!r} (set {flag('text_field')} to the "
                        "field that holds the text)"
                    )
                if "\x00" in record[field]:
                    raise MyptError(f"{path} line {number}: the text holds a NUL character")
                yield record[field]
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise MyptError(f"cannot read {path}: {e}") from None


def iter_parquet_documents(path: Path, field: str) -> Iterator[str]:
    """The `field` column of a Parquet file, row group by row group (never the whole file at once)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MyptError(f"{path} is Parquet, which needs pyarrow: pip install 'mypt[data]'") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own ArrowInvalid/OSError kinds
        raise MyptError(f"{path} is not a readable Parquet file: {e}") from None
    if field not in table.schema_arrow.names:
        raise MyptError(
            f"{path} has no column {field!r} (columns: {', '.join(table.schema_arrow.names)}); set "
            f"{flag('text_field')} to the column that holds the text"
        )
    for group in range(table.num_row_groups):
        for text in table.read_row_group(group, columns=[field]).column(0).to_pylist():
            if text is None:
                continue
            if not isinstance(text, str):
                raise MyptError(f"{path}: column {field!r} holds {type(text).__name__}, not text")
            yield text


def iter_texts(file: InputFile, field: str, chunk_bytes: int) -> Iterator[str]:
    """All the text of a file: a text file's in pieces, a JSONL/Parquet file's records."""
    if file.kind == "text":
        return iter_text_chunks(file.path, chunk_bytes)
    return iter_documents(file, field)


def iter_documents(file: InputFile, field: str) -> Iterator[str]:
    if file.kind == "jsonl":
        return iter_jsonl_documents(file.path, field)
    if file.kind == "parquet":
        return iter_parquet_documents(file.path, field)
    raise ValueError(file.kind)


# -- token shards -----------------------------------------------------------------------------


def open_shard(path: Path) -> np.ndarray:
    """The GPT-2 ids of a nanoGPT .bin (raw uint16) or llm.c shard (header, then uint16), mapped in
    place. The header and the ids are checked: a damaged shard is one error naming it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(LLMC_HEADER_INTS * 4)
    magic = int(np.frombuffer(head[:4], dtype="<i4")[0]) if len(head) >= 4 else None
    if magic == LLMC_MAGIC:
        if len(head) < LLMC_HEADER_INTS * 4:
            raise MyptError(f"token shard {path} is truncated: shorter than its 1024-byte header")
        header = np.frombuffer(head, dtype="<i4")
        if int(header[1]) != LLMC_VERSION:
            raise MyptError(f"token shard {path} has version {int(header[1])}; mypt reads llm.c version 1")
        n = int(header[2])
        if size != LLMC_HEADER_INTS * 4 + 2 * n:
            raise MyptError(
                f"token shard {path} is truncated or damaged: its header says {n} tokens "
                f"({LLMC_HEADER_INTS * 4 + 2 * n} bytes) but the file has {size} bytes"
            )
        tokens = np.memmap(path, dtype="<u2", mode="r", offset=LLMC_HEADER_INTS * 4, shape=(n,))
    else:
        if size % 2:
            raise MyptError(
                f"token shard {path} has an odd size ({size} bytes): neither raw uint16 ids (nanoGPT) "
                f"nor an llm.c shard (magic {LLMC_MAGIC})"
            )
        tokens = np.memmap(path, dtype="<u2", mode="r")
    if len(tokens):
        top = int(tokens.max())
        if top >= GPT2_SHARD_VOCAB:
            at = int(np.argmax(tokens >= GPT2_SHARD_VOCAB))
            raise MyptError(
                f"token shard {path} holds id {top} at token {at}, outside GPT-2's {GPT2_SHARD_VOCAB} ids: "
                f"not a GPT-2 token shard (or damaged; an llm.c shard starts with magic {LLMC_MAGIC})"
            )
    return tokens


def is_validation_shard(path: Path) -> bool:
    """nanoGPT's val.bin and llm.c's *_val_*.bin hold the held-out ids."""
    stem = path.name.lower()
    return stem == "val.bin" or "_val_" in stem or stem.startswith("val_") or stem.endswith("_val.bin")
