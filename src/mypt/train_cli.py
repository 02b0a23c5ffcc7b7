"""`mypt fit|validate|test|predict`: LightningCLI's wiring (arguments, callbacks, the trainer); the
bundle's precedence rules, applied while parsing, are mypt.resume's."""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from jsonargparse import ArgumentError
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from mypt import budget, bundle, corpus, fsdp, optim, precision, resume
from mypt.checkpointing import BundleCheckpoint
from mypt.dashboard import StepTensorBoardLogger, TrainingDashboard, progress_callback, start_header
from mypt.data import TextDataModule
from mypt.errors import MyptError
from mypt.guards import RunGuard, check_strategy
from mypt.hf import resolve_init_from
from mypt.module import GPTModule
from mypt.report import (
    argument_error_line,
    budget_line,
    early_stop_line,
    evaluation_line,
    run_end_line,
    sample_heading,
)
from mypt.schedule import check_last_step

TRAINER_DEFAULTS: dict[str, Any] = {
    "max_steps": 5000,
    "val_check_interval": 250,
    "limit_val_batches": 50,
    "check_val_every_n_epoch": None,
    "gradient_clip_val": 1.0,
    "log_every_n_steps": 10,
    "num_sanity_val_steps": 0,
    "enable_model_summary": False,  # mypt's start header says the size (--lightning_messages true: the table)
    "enable_checkpointing": False,  # the bundle callback does the saving
}
LOG_ROOT = "logs"

# the seed is recorded in training_state.json; Lightning's "Seed set to" line would precede any error
logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
# Lightning's start-up and restore messages (GPU/TPU available, restoring states, `Trainer.fit`
# stopped): mypt's start header says what matters; --lightning_messages true shows them
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
for _name in LIGHTNING_INFO_LOGGERS:
    # Lightning advertises its cloud logger at every start; the run's own lines matter more
    logging.getLogger(_name).addFilter(lambda record: "litlogger" not in record.getMessage())
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")  # Lightning vs torch 2.13


class ValLossEarlyStopping(EarlyStopping):
    """Lightning's EarlyStopping on val/loss, counting from the best model kept so far: a resumed run
    (or one that had no early stopping before) compares each validation with the bundle's best and
    counts its patience from its own start, with the patience and min_delta given for it (Lightning
    would restore the saved ones)."""

    def __init__(self, patience: int, min_delta: float, saver: BundleCheckpoint) -> None:
        super().__init__(
            monitor="val/loss", mode="min", patience=patience, min_delta=min_delta,
            check_on_train_epoch_end=False, verbose=False,
        )  # fmt: skip
        self.saver = saver

    def state_dict(self) -> dict:
        return {}  # nothing for Lightning to restore: the bundle's best is the reference

    def on_train_start(self, trainer, pl_module) -> None:
        if self.saver.best is not None:
            self.best_score = torch.tensor(float(self.saver.best["val_loss"]))


class MyptCLI(LightningCLI):
    def __init__(self, args: list[str] | None = None, run: bool = True, started: float | None = None) -> None:
        self.started = time.monotonic() if started is None else started  # the budget counts from here
        self.budget: budget.StartPlan | None = None  # --trainer.max_time's plan (mypt.budget)
        self.resume_from: Path | None = None
        self.saved_state: dict = {}
        self.saved_config: dict = {}
        self.speed: precision.SpeedChoice | None = None  # fit's precision and compile
        self.command_line = list(sys.argv[1:] if args is None else args)
        self.vocab_size_given: str | None = None  # --model.vocab_size, compared with a saved model's
        self.replace: Path | None = None  # the bundle that --restart sets aside once the run starts
        self.log_dir: Path | None = None  # logs/<model_name>, when this run created it
        try:
            self._init(args, run)
        except BaseException:
            self._drop_logs_of_a_model_never_saved()
            raise

    def _init(self, args: list[str] | None, run: bool) -> None:
        super().__init__(
            GPTModule,
            TextDataModule,
            save_config_callback=None,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=1337,
            auto_configure_optimizers=False,
            # no abbreviations: `--trainer.max_step 100` would set max_steps without a word
            parser_kwargs={"exit_on_error": False, "allow_abbrev": False},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--model_name", type=str | None, default=None,
            help="Bundle folder name: checkpoints/<model_name> (default: the input file's name without its "
            "extension, or the input folder's name).",
        )  # fmt: skip
        parser.add_argument(
            "--checkpoint_dir", type=str, default=bundle.DEFAULT_ROOT, help="Where bundles live."
        )
        parser.add_argument(
            "--restart", type=bool, default=False,
            help="Start a new model even if checkpoints/<model_name> holds one (the old bundle is kept aside).",
        )  # fmt: skip
        parser.add_argument(
            "--keep_best", type=bool, default=True,
            help="fit: keep the weights with the lowest val loss so far in checkpoints/<model_name>/best.",
        )  # fmt: skip
        parser.add_argument(
            "--best", type=bool, nargs="?", const=True, default=False,
            help="validate, test, predict: use the bundle's best model (lowest val loss) instead of its latest weights.",
        )  # fmt: skip
        parser.add_argument(
            "--early_stopping.patience", type=int | None, default=None,
            help="Stop when val/loss has not improved on the best so far for this many validations (off by default).",
        )  # fmt: skip
        parser.add_argument(
            "--early_stopping.min_delta", type=float, default=0.0,
            help="The least decrease of val/loss that counts as an improvement for early stopping.",
        )  # fmt: skip
        parser.add_argument(
            "--lightning_messages", type=bool, default=False,
            help="Show Lightning's own start-up messages and model summary besides mypt's start header.",
        )  # fmt: skip
        parser.add_lightning_class_args(TrainingDashboard, "dashboard")
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("model.block_size", "data.block_size")

    # -- parsing: the bundle's values become defaults ---------------------------------------

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        # vocab_size is linked from the tokenizer; taken aside here so that a value given for it is
        # compared with the saved model's (jsonargparse would only say it is linked)
        args, self.vocab_size_given = _take_option(
            list(sys.argv[1:] if args is None else args), VOCAB_SIZE_FLAG
        )
        args, size = _take_option(args, "--model.size")  # mypt.sizing: not an architecture key
        try:
            self.config = parser.parse_args(args)
        except ArgumentError as e:  # a mistyped flag or config key: the nearest known one, and where
            raise MyptError(argument_error_line(str(e), args, self._subcommand_parsers)) from None
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return
        cfg = self.config[subcommand]
        for name in LIGHTNING_INFO_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO if cfg.lightning_messages else logging.WARNING)
        if cfg.model_name is None and not cfg.get("ckpt_path"):
            cfg.model_name = bundle.model_name_for(cfg.data.input_file)
            resume.set_defaults(self._parser(subcommand), {"model_name": cfg.model_name})
            print(
                f"mypt: model name {cfg.model_name} (from --data.input_file; --model_name to choose another)"
            )
        if cfg.model_name is not None:  # else --ckpt_path's folder names it
            bundle.validate_model_name(cfg.model_name)
        if subcommand == "fit" and cfg.get("best"):
            raise MyptError(
                "--best is for validate, test and predict; to train on from a bundle's best weights, "
                "fine-tune them: --model.init_from checkpoints/NAME/best --model_name NEW_NAME"
            )
        source = self._resume_source(subcommand, cfg)
        if source is not None:
            self.saved_config, self.saved_state, defaults = resume.bundle_defaults(subcommand, source)
            self.resume_from = source
            resume.set_defaults(self._parser(subcommand), defaults)
            self.config = parser.parse_args(args)
            cfg = self.config[subcommand]
            cfg.ckpt_path = str(source)
            resume.check_architecture(
                cfg, self.saved_config, source, allowed=(), vocab_size=self.vocab_size_given
            )
            if cfg.get("best"):
                cfg.ckpt_path = str(bundle.resolve_best(source))
        elif cfg.get("best"):
            raise MyptError(f"--best needs the bundle: mypt {subcommand} --ckpt_path NAME --best")
        elif cfg.model.init_from:
            # a bundle, or a Hugging Face GPT-2 converted into one
            parent = resolve_init_from(cfg.model.init_from, cfg.checkpoint_dir)
            resume.set_defaults(self._parser(subcommand), resume.parent_defaults(parent))
            self.config = parser.parse_args(args)
            cfg = self.config[subcommand]
            cfg.model.init_from = str(parent)
            parent_config = bundle.load_config(parent)
            resume.check_architecture(
                cfg, parent_config, parent, resume.fine_tunable(parent_config), self.vocab_size_given
            )
        elif self.vocab_size_given is not None:
            raise MyptError(
                f"{VOCAB_SIZE_FLAG} {self.vocab_size_given}: the vocabulary size is not a setting but the "
                "tokenizer's (--data.tokenizer), linked from the data"
            )
        # the url downloads the config's (or the bundle's) own input_file, never one named instead
        data = cfg.data
        data.url = corpus.url_for(data.input_file, data.url, cfg.get("config"), self.saved_state.get("data"))
        if subcommand != "fit" or cfg.trainer.get("max_time") is None:
            check_last_step(cfg.trainer.max_steps)
        patience, min_delta = cfg.early_stopping.patience, cfg.early_stopping.min_delta
        if patience is not None and patience < 0:
            raise MyptError(f"--early_stopping.patience must not be negative, got {patience}")
        if min_delta < 0:
            raise MyptError(f"--early_stopping.min_delta must not be negative, got {min_delta}")
        interval = cfg.trainer.val_check_interval
        if interval is not None and interval <= 0:
            raise MyptError(
                f"--trainer.val_check_interval must be positive, got {interval}: it is the number of steps "
                "between validations (and saves); to validate rarely, give a large one, e.g. max_steps"
            )
        if subcommand == "fit":
            saved = self.saved_state if source is not None else None
            self.budget = plan_budget(cfg, args, size, self.started, saved)
        if subcommand == "fit" and source is not None:
            resume.check_steps_left(source, self.saved_state.get("step", 0), cfg.trainer.max_steps)
        self._choose_precision(subcommand, cfg)

    def _choose_precision(self, subcommand: str, cfg) -> None:
        """Unset --trainer.precision and --model.compile become concrete values chosen for the hardware
        (mypt.precision), so the bundle records what ran. An evaluation runs in the bundle's recorded
        precision (float32 without one) and eager: compiling would cost more than it saves."""
        if subcommand != "fit":
            cfg.model.compile = bool(cfg.model.compile)
            return
        self.speed = precision.choose(
            precision.device_type(cfg.trainer.get("accelerator")),
            cfg.trainer.get("precision"),
            cfg.model.compile,
            n_embd=cfg.model.n_embd,
            tokens_per_step=cfg.data.batch_size * cfg.model.block_size,
            threads=precision.cpu_threads(cfg.trainer.get("devices")),
        )
        cfg.trainer.precision = self.speed.precision
        cfg.model.compile = self.speed.compile

    def _resume_source(self, subcommand: str, cfg) -> Path | None:
        if cfg.get("ckpt_path"):
            return bundle.resolve_bundle(cfg.ckpt_path, cfg.checkpoint_dir)
        if subcommand != "fit":
            return None
        existing = bundle.bundle_path(cfg.model_name, cfg.checkpoint_dir)
        if not bundle.is_bundle(existing):
            if existing.exists():  # never replace a folder that is not ours
                raise MyptError(f"{existing} exists but is not a mypt bundle; choose another --model_name")
            return None
        if cfg.restart:
            self.replace = existing  # set aside once the text and settings have been checked
            return None
        print(f"mypt: {existing} already holds a model: resuming it (use --restart true to start over)")
        return existing

    # -- running ----------------------------------------------------------------------------

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        cfg = self.config[self.subcommand]
        if self.subcommand == "fit" and self.resume_from is None and rank_zero_only.rank == 0:
            self._set_aside_the_old_model(cfg.model_name, cfg.checkpoint_dir)
        if self.subcommand != "fit" and cfg.trainer.get("logger") is None:
            kwargs["logger"] = False  # evaluating a bundle must not write into its training curves
        elif cfg.trainer.get("logger") in (None, True):
            log_dir = Path(LOG_ROOT) / cfg.model_name
            self.log_dir = None if log_dir.exists() else log_dir
            kwargs["logger"] = StepTensorBoardLogger(
                save_dir=LOG_ROOT,
                name=cfg.model_name,
                version="",  # one folder per model: a resumed run continues the same curves
                default_hp_metric=False,
                purge_step=self.saved_state.get("step", 0) + 1 if self.resume_from else None,
            )
        dirpath = bundle.bundle_path(cfg.model_name, cfg.checkpoint_dir)
        # keep the user's --trainer.callbacks: a `callbacks` keyword would replace them
        user_callbacks = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        user_callbacks = user_callbacks if isinstance(user_callbacks, list) else [user_callbacks]
        callbacks = [*user_callbacks, *(kwargs.pop("callbacks", []) or [])]
        if cfg.trainer.get("enable_checkpointing") or any(isinstance(c, ModelCheckpoint) for c in callbacks):
            raise MyptError(
                f"mypt does not use Lightning's ModelCheckpoint: it saves the bundle {dirpath} at every "
                f"validation and keeps the model with the lowest val loss in {dirpath / bundle.BEST_DIR} "
                "(mypt generate NAME --best); to stop when val loss stops improving use "
                "--early_stopping.patience N"
            )
        resume_step = self.saved_state.get("step", 0) if self.resume_from is not None else None
        guard = RunGuard(dirpath)  # before the saver: it restores the signal handlers before the last save
        saver = BundleCheckpoint(
            dirpath,
            command_line=self.command_line,
            resume_step=resume_step,
            guard=guard,
            keep_best=cfg.keep_best,
            precision_choice=self.speed.record() if self.speed else None,
        )
        callbacks.append(guard)
        if cfg.early_stopping.patience is not None and self.subcommand == "fit":
            # before the saver: the save at the validation that stops records why
            callbacks.append(
                ValLossEarlyStopping(cfg.early_stopping.patience, cfg.early_stopping.min_delta, saver)
            )
        callbacks.append(saver)
        if self.budget is not None:  # after the saver: it adds its record to the bundle's
            callbacks.append(self.budget.callback(self.started))
        if self.resume_from is not None and self.subcommand == "fit":  # earlier runs' size choice, budget
            callbacks.append(budget.KeptRecords(self.saved_state))
        has_bar = any(isinstance(c, ProgressBar) for c in callbacks)  # Lightning accepts only one
        if cfg.trainer.get("enable_progress_bar") is not False and not has_bar:
            callbacks.append(progress_callback())
        if self.subcommand != "fit" and cfg.trainer.get("devices") in (None, "auto"):
            # evaluating and sampling need no more than one device; Lightning's "auto" would start a
            # process per GPU (each printing the same sample). --trainer.devices N still asks for more
            kwargs["devices"] = 1
        if self.subcommand == "predict":
            devices = kwargs.get("devices", cfg.trainer.get("devices"))
            _sample_on_at_most(len(cfg.data.prompts or ["\n"]), devices, cfg.trainer.get("num_nodes"), kwargs)
        if cfg.lightning_messages:
            kwargs["enable_model_summary"] = True
        strategy = cfg.trainer.get("strategy")
        if isinstance(strategy, str) and strategy in fsdp.ALIASES:  # FSDP that saves bundles
            kwargs["strategy"] = fsdp.BundleFSDPStrategy(**fsdp.ALIASES[strategy])
        _check_accelerator(cfg.trainer.get("accelerator"))
        try:
            trainer = super().instantiate_trainer(callbacks=callbacks, **kwargs)
        except (ValueError, ModuleNotFoundError) as e:  # Lightning's checks of trainer settings, or an
            # accelerator whose package is missing (tpu without torch_xla)
            raise MyptError(" ".join(str(e).split())) from None
        check_strategy(trainer.strategy)  # here, before Lightning starts the other ranks
        if self.subcommand == "predict" and trainer.world_size > len(cfg.data.prompts or ["\n"]):
            # processes started by torchrun or SLURM, or several machines: their number is not ours
            n = len(cfg.data.prompts or [""])
            raise MyptError(
                f"{n} prompt{'s' if n > 1 else ''} for {trainer.world_size} processes: every process needs "
                "one; give more --data.prompts, or run on fewer processes"
            )
        if self.subcommand == "fit":
            optim.check_strategy(trainer.strategy, self.model.hparams.optimizer)
        precision.use_tensor_cores(trainer.accelerator)
        precision.keep_freed_memory(trainer.accelerator)
        return trainer

    def _set_aside_the_old_model(self, model_name: str, checkpoint_dir: str) -> None:
        """A new model starts with its own curves: the old bundle (--restart) and the old logs of the
        same name are moved aside together, so that no step is logged twice in logs/<model_name>."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if self.replace is not None and bundle.is_bundle(self.replace):
            aside = self.replace.with_name(f"{self.replace.name}.replaced-{stamp}")
            shutil.move(self.replace, aside)
            print(
                f"mypt: --restart: the old bundle is kept at {aside}; training a new model", file=sys.stderr
            )
        logs = Path(LOG_ROOT) / model_name
        if logs.is_dir() and any(p.is_file() for p in logs.rglob("*")):
            aside = logs.with_name(f"{logs.name}.replaced-{stamp}")
            shutil.move(logs, aside)
            print(f"mypt: the old TensorBoard logs of {model_name} are kept at {aside}", file=sys.stderr)

    def _drop_logs_of_a_model_never_saved(self) -> None:
        """A run that failed before its model's first save leaves no logs folder behind."""
        if self.log_dir is None or not self.log_dir.is_dir() or rank_zero_only.rank != 0:
            return
        cfg = self.config[self.subcommand]
        if not bundle.is_bundle(bundle.bundle_path(cfg.model_name, cfg.checkpoint_dir)):
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def before_validate(self) -> None:
        if self.trainer.is_global_zero:
            best = self._get(self.config, "best")
            print(evaluation_line("validating", self.resume_from, self.saved_state, best))

    def before_test(self) -> None:
        if self.trainer.is_global_zero:
            best = self._get(self.config, "best")
            print(evaluation_line("testing", self.resume_from, self.saved_state, best))
            held_out = 1 - self.datamodule.train_split
            print(
                f"mypt: test evaluates the validation split (the last {held_out:.0%} of the text, as "
                "`mypt validate`): mypt keeps no separate test split"
            )

    def before_fit(self) -> None:
        if not self.trainer.is_global_zero:
            return
        saver = next(c for c in self.trainer.callbacks if isinstance(c, BundleCheckpoint))
        print(start_header(self.trainer, self.model, self.datamodule, saver.dirpath, saver.resume_step))
        if self.speed is not None:
            print(self.speed.line())
        if self.budget is not None:
            print("\n".join(self.budget.lines()))
        if self.resume_from is not None:
            files = self.datamodule.settings()["files"]
            print(resume.resume_report(self.resume_from, self.saved_state, self.config["fit"], files))
        if self.trainer.world_size > 1:
            print(world_size_line(self.trainer, self.datamodule.batch_size))

    def after_fit(self) -> None:
        guard = next(c for c in self.trainer.callbacks if isinstance(c, RunGuard))
        saver = next(c for c in self.trainer.callbacks if isinstance(c, BundleCheckpoint))
        if self.trainer.is_global_zero and saver.last_saved_step is not None:
            best = saver.best and {**saver.best, "path": str(saver.dirpath / bundle.BEST_DIR)}
            why = saver.early_stop_why(self.trainer)
            if why is not None:
                print(early_stop_line(self.trainer.global_step, why, best))
            print(
                run_end_line(
                    saver.dirpath, saver.last_saved_step, saver.last_val_loss, saver.last_val_bpb, best
                )
            )
            timer = next((c for c in self.trainer.callbacks if isinstance(c, budget.TimeBudget)), None)
            if timer is not None:
                print(budget_line(timer.summary(), timer.stopped))
        if guard.stop_signal is not None:
            name = signal.Signals(guard.stop_signal).name
            print(
                f"mypt: stopped by {name} at step {self.trainer.global_step}; bundle saved to {guard.dirpath}; "
                f"continue with: mypt fit --ckpt_path {guard.dirpath}",
                file=sys.stderr,
            )
            raise SystemExit(128 + guard.stop_signal)

    def predict(self, model: GPTModule, datamodule: TextDataModule, **kwargs: Any) -> None:
        """Lightning's predict, with the samples printed once each, in the order of --data.prompts.
        On several ranks each samples some prompts (Lightning's sampler repeats one to even them out);
        rank zero gathers and prints them."""
        samples = dict(self.trainer.predict(model, datamodule=datamodule, **kwargs) or [])
        if self.trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list[dict | None] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, samples)
            samples = {index: text for part in gathered for index, text in (part or {}).items()}
        if self.trainer.is_global_zero:
            prompts = datamodule.prompts or ["\n"]
            print("\n\n".join(f"{sample_heading(i, prompts)}\n{text}" for i, text in sorted(samples.items())))


def _sample_on_at_most(n_prompts: int, devices: Any, num_nodes: int | None, kwargs: dict[str, Any]) -> None:
    """Fewer prompts than processes: sample on one process per prompt (Lightning's predict sampler
    would leave a process without any, and fail). Decided from the arguments alone, so that the
    processes Lightning starts decide the same."""
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    elif isinstance(devices, str) and "," in devices:
        devices = [int(d) for d in devices.split(",") if d.strip()]
    count = len(devices) if isinstance(devices, list) else devices if isinstance(devices, int) else 0
    if count <= n_prompts or (num_nodes or 1) > 1:  # -1 (every device), or several machines: not ours
        return
    kwargs["devices"] = devices[:n_prompts] if isinstance(devices, list) else n_prompts
    if n_prompts == 1:  # one process needs no process group: DDP on one would open one in this process,
        kwargs["strategy"] = "auto"  # and its MASTER_PORT would be inherited by every later child
    if rank_zero_only.rank == 0:
        print(
            f"mypt: {n_prompts} prompt{'s' if n_prompts > 1 else ''}: sampling on {n_prompts} "
            f"process{'es' if n_prompts > 1 else ''}, not {count}",
            file=sys.stderr,
        )


def plan_budget(cfg, args: list[str], size: str | None, started: float, saved: dict | None):
    """--trainer.max_time and --model.size (mypt.budget, mypt.sizing), timed with the real module."""
    device = precision.device_type(cfg.trainer.get("accelerator"))

    def build(kwargs: dict):
        module = GPTModule(**kwargs)
        return module.model, module.configure_optimizers()

    def precision_for(n_embd: int, tokens_per_step: int) -> str:
        given = cfg.trainer.get("precision")
        return precision.choose(
            device, given, False, n_embd=n_embd, tokens_per_step=tokens_per_step
        ).precision

    fine_tuning = bool(cfg.model.init_from)
    return budget.plan_fit(cfg, args, started, saved, fine_tuning, size, build, precision_for, device)


def world_size_line(trainer: pl.Trainer, batch_size: int) -> str:
    """ "DDP over 4 GPUs: 4 x 32 sequences per step (128 in all)": Lightning starts a process per device
    it is given ("auto": every GPU), and each draws its own batch, so the global batch grows with the
    number of processes while the learning-rate schedule, counted in steps, stays the same."""
    strategy = type(trainer.strategy).__name__.removesuffix("Strategy").removeprefix("Bundle")
    kind = "GPUs" if isinstance(trainer.accelerator, CUDAAccelerator) else "processes"
    nodes = f" on {trainer.num_nodes} machines" if trainer.num_nodes > 1 else ""
    per_step = batch_size * trainer.accumulate_grad_batches
    return (
        f"{strategy} over {trainer.world_size} {kind}{nodes}: {trainer.world_size} x {per_step} sequences "
        f"per step ({trainer.world_size * per_step} in all; --trainer.devices sets the number)"
    )


VOCAB_SIZE_FLAG = "--model.vocab_size"


def _take_option(args: list[str], flag: str) -> tuple[list[str], str | None]:
    """`args` without `flag VALUE` (or `flag=VALUE`), and that value (None when absent)."""
    rest, value = [], None
    items = iter(args)
    for item in items:
        if item == flag:
            value = next(items, "")
        elif item.startswith(f"{flag}="):
            value = item.split("=", 1)[1]
        else:
            rest.append(item)
    return rest, value


def _check_accelerator(accelerator: Any) -> None:
    """A GPU asked of a PyTorch built without CUDA: say so, rather than Lightning's "not available"."""
    if accelerator in ("gpu", "cuda") and torch.version.cuda is None and not torch.cuda.is_available():
        raise MyptError(
            f"--trainer.accelerator {accelerator}: the installed PyTorch {torch.__version__} is built without "
            "CUDA (torch.version.cuda is None). `make install` runs `pip install torch`, which installs the "
            "CUDA build on Linux from PyPI and the CPU build from a CPU-only index: on a GPU machine, "
            "reinstall torch from PyPI or pytorch.org's CUDA index; on this one use --trainer.accelerator cpu"
        )


def run(args: list[str] | None = None, started: float | None = None) -> None:
    try:
        MyptCLI(args=args, started=started)
    except resume.NothingToTrain:
        pass
    except budget.NothingLeft as e:
        print(e)
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """Close the process group before the interpreter exits. Left to interpreter shutdown, a rank's
    gloo threads are destroyed while still joinable ("terminate called without an active
    exception", SIGABRT) now and then, after a run that succeeded: torchrun then reports the node
    as failed and the other nodes wait 5 minutes at its exit barrier. Not a collective: safe on
    every exit path, whatever the other ranks are doing."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
