"""The `mypt` command.

Training subcommands (fit, validate, test, predict) go to LightningCLI in mypt.train_cli; the
commands that only read bundles (inspect, generate, list, export) are handled here without importing
Lightning, so they start fast. Every user error ends as one `mypt: error: ...` line and exit status 2; set
MYPT_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from mypt.bundle import DEFAULT_ROOT, get_model_info, is_bundle, resolve_best
from mypt.corpus import DEFAULT_EXTENSIONS
from mypt.errors import MyptError
from mypt.report import (
    format_comparison,
    format_corpus,
    format_info,
    format_list,
    list_row,
    unrecognized_line,
)
from mypt.sampling import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT, DEFAULT_TEMPERATURE, DEFAULT_TOP_K

TRAINING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
BEST_HELP = (
    "the bundle's best model (lowest val loss, kept in its best/ folder) instead of its latest weights"
)
EVALUATING_SUBCOMMANDS = ("validate", "test", "predict")
TRAINING_HELP = {
    "fit": "train a model, or resume one (see `mypt fit --help`)",
    "validate": "NAME: the validation loss of a bundle",
    "test": "NAME: the loss of a bundle on the validation split (mypt keeps no separate test split)",
    "predict": "NAME: samples from a bundle, one per --data.prompts entry",
}


def _inspect(args: argparse.Namespace) -> None:
    if len(args.bundle) > 2:
        raise MyptError("inspect takes one bundle, or two to compare")
    infos = [get_model_info(b, args.checkpoint_dir) for b in args.bundle]
    if len(infos) == 1:
        print(json.dumps(infos[0], indent=2) if args.json else format_info(infos[0]))
    elif args.json:
        print(json.dumps(infos, indent=2))
    else:
        print(format_comparison(*infos, color=sys.stdout.isatty() and "NO_COLOR" not in os.environ))


def _list(args: argparse.Namespace) -> None:
    root = Path(args.checkpoint_dir)
    folders = (
        sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if root.is_dir()
        else []
    )
    rows, problems = [], []
    for folder in folders:
        if not is_bundle(folder):
            continue
        try:
            rows.append(list_row(get_model_info(folder)))
        except MyptError as e:
            problems.append((folder.name, str(e)))
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows or problems:
        print(format_list(rows, problems))
    else:
        print(f"no models under {root}/ (train one with: mypt fit --config configs/dante_cpu.yaml)")


def _export(args: argparse.Namespace) -> None:
    from mypt.hf import export_hf, exported_class  # torch and transformers: only for the commands using them

    source = resolve_best(args.bundle, args.checkpoint_dir) if args.best else args.bundle
    out = export_hf(source, args.out, args.checkpoint_dir)
    print(
        f"exported {source} to {out} (a transformers {exported_class(out)} and its tokenizer; "
        f"try: pipeline('text-generation', model='{out}'))"
    )


def _generate(args: argparse.Namespace) -> None:
    from mypt.bundle import load_model
    from mypt.sampling import sample

    model, tokenizer, _ = load_model(
        args.bundle, device=args.device, root=args.checkpoint_dir, best=args.best
    )
    print(sample(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed))


def _data(args: argparse.Namespace) -> None:
    from mypt import corpus
    from mypt.data import TextDataModule  # Lightning: only this command pays for it

    dm = TextDataModule(
        input_file=args.paths[0] if len(args.paths) == 1 else args.paths,
        tokenizer=args.tokenizer,
        train_split=args.train_split,
        cache_dir=args.cache_dir,
        val_files=args.val_files,
        text_field=args.text_field,
        vocab_size=args.vocab_size,
        extensions=args.extensions,
        block_size=1,
    )
    flags = corpus.flags.set(corpus.DATA_FLAGS)  # errors name this command's options: --vocab_size
    try:
        inputs = dm.inputs
        settings = dm.settings()
        print(format_corpus(settings, inputs.n_documents, inputs.tokenizer, inputs.cache_dir, inputs.hit))
    finally:
        corpus.flags.reset(flags)


class _Parser(argparse.ArgumentParser):
    """argparse without abbreviations (`--max_new 5` would set --max_new_tokens without a word); an
    unknown option is one `mypt: error:` line with the nearest known one."""

    def __init__(self, **kwargs) -> None:
        super().__init__(allow_abbrev=False, **kwargs)
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = self.commands.get(getattr(parsed, "command", None), self)
            options = [option for action in command._actions for option in action.option_strings]
            raise MyptError(unrecognized_line(unknown, options))
        return parsed


def _reader_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mypt",
        description="Train small GPTs on your own text.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in TRAINING_SUBCOMMANDS:
        sub.add_parser(name, help=TRAINING_HELP[name], add_help=False)

    def command(name: str, description: str) -> argparse.ArgumentParser:
        parser.commands[name] = sub.add_parser(
            name,
            help=description,
            description=description,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        return parser.commands[name]

    where = "folder of the bundles a model name is looked up in"
    bundle_help = "a bundle folder, or a model name under --checkpoint_dir"
    p = command("inspect", "show a bundle's config, tokenizer and training state; two bundles side by side")
    p.add_argument("bundle", nargs="+", help=f"{bundle_help}; two to compare")
    p.add_argument("--json", action="store_true", help="print one JSON object (a list of two when comparing)")
    p.add_argument("--checkpoint_dir", default=DEFAULT_ROOT, help=where)
    p.set_defaults(func=_inspect)

    p = command("list", "one line per model under --checkpoint_dir")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument("--checkpoint_dir", default=DEFAULT_ROOT, help="folder whose bundles are listed")
    p.set_defaults(func=_list)

    p = command("export", "write a bundle in another format (hf: a transformers folder)")
    p.add_argument("bundle", help=bundle_help)
    p.add_argument("out", help="the folder to create")
    p.add_argument("--format", choices=["hf"], default="hf", help="hf: transformers GPT-2, Qwen3 or Llama")
    p.add_argument("--best", action="store_true", help=BEST_HELP)
    p.add_argument("--checkpoint_dir", default=DEFAULT_ROOT, help=where)
    p.set_defaults(func=_export)

    p = command("data", "tokenise a corpus ahead of training and describe it")
    p.add_argument("paths", nargs="+", help="files, folders or quoted globs, as --data.input_file takes them")
    p.add_argument("--tokenizer", default="char", help="char, gpt2 or bpe (token shards: gpt2)")
    p.add_argument("--vocab_size", type=int, default=None, help="tokens of a bpe tokenizer (none: 4096)")
    p.add_argument("--val_files", nargs="+", default=None, help="a held-out validation set")
    p.add_argument("--text_field", default="text", help="the JSONL field / Parquet column with the text")
    p.add_argument("--train_split", type=float, default=0.9, help="fraction of each document that trains")
    # one value, comma-separated or repeated: a list of values would swallow the paths that follow
    # (`mypt data --extensions .py code/` took code/ for an ending)
    p.add_argument(
        "--extensions", action="extend", type=lambda v: [e for e in v.split(",") if e.strip()], default=None,
        help=f"file endings a folder walk keeps (.py,.md or --extensions .py --extensions .md); none: "
        f"{' '.join(DEFAULT_EXTENSIONS)}",
    )  # fmt: skip
    p.add_argument(
        "--cache_dir", default=None, help="token cache folder (none: $MYPT_CACHE_DIR or ~/.cache/mypt/tokens)"
    )
    p.set_defaults(func=_data)

    p = command("generate", "sample text from a bundle")
    p.add_argument("bundle", help=bundle_help)
    p.add_argument(
        "--prompt", default=DEFAULT_PROMPT, help="text the sample continues (default: %(default)r)"
    )
    p.add_argument(
        "--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="tokens to sample after the prompt"
    )
    p.add_argument(
        "--temperature", type=float, default=DEFAULT_TEMPERATURE,
        help="below 1 sharper, above 1 more varied; 0 always takes the most likely token",
    )  # fmt: skip
    p.add_argument(
        "--top_k", type=int, default=DEFAULT_TOP_K, help="sample from the k most likely tokens only"
    )
    p.add_argument(
        "--seed", type=int, default=None, help="the same seed gives the same text; none: a random one"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    p.add_argument("--best", action="store_true", help=BEST_HELP)
    p.add_argument("--checkpoint_dir", default=DEFAULT_ROOT, help=where)
    p.set_defaults(func=_generate)
    return parser


def _name_as_ckpt_path(argv: list[str]) -> list[str]:
    """`mypt validate NAME` as `generate` and `inspect` take it: LightningCLI's subcommands take
    options only, so a bundle named first is passed on as --ckpt_path NAME."""
    if argv[0] in EVALUATING_SUBCOMMANDS and len(argv) > 1 and not argv[1].startswith("-"):
        return [argv[0], "--ckpt_path", argv[1], *argv[2:]]
    return argv


def _fail(message: str) -> int:
    print(f"mypt: error: {message}", file=sys.stderr)
    return 2


def _interrupted(announced: bool) -> int:
    """Ctrl-C is not bad input: the shell's status for a command that SIGINT ended, 128 + 2."""
    if not announced:
        print("\nmypt: interrupted", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    # a time budget (--trainer.max_time) counts from here: the process's start for the command itself
    started = time.monotonic() - (_process_age() if argv is None else 0.0)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("MYPT_DEBUG", "") not in ("", "0")
    try:
        if argv and argv[0] in TRAINING_SUBCOMMANDS:
            return _train(_name_as_ckpt_path(argv), debug, started)
        parser = _reader_parser()
        args = parser.parse_args(argv)
        args.func(args)
        return 0
    except MyptError as e:
        if debug:
            raise
        return _fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C before a training command took SIGINT over, or while reading
        return _interrupted(announced=False)
    except BrokenPipeError:  # `mypt generate ... | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _process_age() -> float:
    """Seconds since this process started (Linux's /proc; 0 elsewhere): the interpreter's start and
    the imports before main() count against a time budget too."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _train(argv: list[str], debug: bool, started: float | None = None) -> int:
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from mypt.guards import Interrupted, interrupts_at_once
    from mypt.train_cli import run

    try:
        with interrupts_at_once():  # Ctrl-C inside Lightning's start-up would otherwise exit 1
            run(argv, started=started)
    except (ArgumentError, MisconfigurationException) as e:
        if debug:
            raise
        return _fail(" ".join(str(e).split()))
    except Interrupted as e:
        return _interrupted(e.announced)
    return 0


if __name__ == "__main__":
    sys.exit(main())
