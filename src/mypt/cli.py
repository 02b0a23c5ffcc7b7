"""The `mypt` command.

Training subcommands (fit, validate, test, predict) go to LightningCLI in mypt.train_cli; the
commands that only read a bundle (inspect, generate) are handled here without importing Lightning,
so they start fast. Every user error ends as one `mypt: error: ...` line and exit status 2; set
MYPT_DEBUG=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mypt.bundle import DEFAULT_ROOT, get_model_info, load_model
from mypt.errors import MyptError
from mypt.report import format_info
from mypt.sampling import sample

TRAINING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _inspect(args: argparse.Namespace) -> None:
    info = get_model_info(args.bundle, args.checkpoint_dir)
    print(json.dumps(info, indent=2) if args.json else format_info(info))


def _generate(args: argparse.Namespace) -> None:
    model, tokenizer, _ = load_model(args.bundle, device=args.device, root=args.checkpoint_dir)
    print(sample(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k, args.seed))


def _reader_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mypt", description="Train small GPTs on your own text.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in TRAINING_SUBCOMMANDS:
        sub.add_parser(name, help=f"{name} with LightningCLI (see `mypt {name} --help`)", add_help=False)

    p = sub.add_parser("inspect", help="show a bundle's config, tokenizer and training state")
    p.add_argument("bundle", help="a bundle folder, or a model name under --checkpoint_dir")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--checkpoint_dir", default=DEFAULT_ROOT)
    p.set_defaults(func=_inspect)

    p = sub.add_parser("generate", help="sample text from a bundle")
    p.add_argument("bundle", help="a bundle folder, or a model name under --checkpoint_dir")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top_k", type=int, default=200)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps (default cpu)")
    p.add_argument("--checkpoint_dir", default=DEFAULT_ROOT)
    p.set_defaults(func=_generate)
    return parser


def _fail(message: str) -> int:
    print(f"mypt: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("MYPT_DEBUG", "") not in ("", "0")
    try:
        if argv and argv[0] in TRAINING_SUBCOMMANDS:
            return _train(argv, debug)
        parser = _reader_parser()
        args = parser.parse_args(argv)
        args.func(args)
        return 0
    except MyptError as e:
        if debug:
            raise
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted")


def _train(argv: list[str], debug: bool) -> int:
    from jsonargparse import ArgumentError
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from mypt.train_cli import run

    try:
        run(argv)
    except (ArgumentError, MisconfigurationException) as e:
        if debug:
            raise
        return _fail(" ".join(str(e).split()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
