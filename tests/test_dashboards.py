"""TensorBoard dashboards and the terminal bar, read back with TensorBoard's own event reader."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from conftest import TINY
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util.tensor_util import make_ndarray

from mypt import dashboard
from mypt.dashboard import SAMPLE_TAG

# Lightning's own "epoch" scalar repeats a step when a validation and a training log share it
MYPT_SCALARS = {"train/loss", "val/loss", "val/bpb", "lr", "tokens_per_sec", "mfu", "grad_norm"}
PROMPT = "Nel mezzo"
SAMPLE_ARGS = ["--dashboard.prompt", PROMPT, "--dashboard.max_new_tokens", "24", "--dashboard.seed", "7"]


def _fit(mypt, text_file, *extra: str):
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model_name", "tiny",
             "--trainer.log_every_n_steps", "5", *SAMPLE_ARGS, *extra)  # fmt: skip
    assert r.code == 0, r
    return r


def _events() -> EventAccumulator:
    """The reader TensorBoard's own backend uses: every summary as a tensor, and the steps a resumed
    run rewrites (SummaryWriter's purge_step) dropped from every tag, text included."""
    events = EventAccumulator("logs/tiny", size_guidance={"tensors": 0})
    events.Reload()
    return events


def _tag(tag: str) -> str:
    return f"{SAMPLE_TAG}/text_summary" if tag == SAMPLE_TAG else tag


def _steps(events: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in events.Tensors(_tag(tag))]


def _values(events: EventAccumulator, tag: str) -> list:
    return [make_ndarray(e.tensor_proto).item() for e in events.Tensors(_tag(tag))]


def test_scalars_text_samples_and_hparams(mypt, text_file):
    _fit(mypt, text_file, "--trainer.max_steps", "20")
    events = _events()
    assert MYPT_SCALARS <= set(events.Tags()["tensors"])
    assert "epoch" not in events.Tags()["tensors"]  # mypt trains by steps; Lightning's epoch is always 0
    logged = [4, 9, 14, 19]  # Lightning logs the metrics of step n+1 at n
    assert _steps(events, "train/loss") == logged
    assert _steps(events, "grad_norm") == logged
    assert all(v > 0 for v in _values(events, "grad_norm"))
    assert _steps(events, "val/loss") == _steps(events, "val/bpb") == [10, 20]  # the bundles' steps
    # MFU on a CPU too, against its measured matmul peak: logged with tokens/s from the second reading on
    assert _steps(events, "mfu") == _steps(events, "tokens_per_sec") == [9, 14, 19]
    assert all(v > 0 for v in _values(events, "mfu"))

    # one sample per validation, at the val/loss step, from the fixed prompt and seed: the last one is
    # exactly what `mypt generate` samples from the saved bundle with the same settings
    assert _steps(events, SAMPLE_TAG) == [10, 20]
    texts = [v.decode() for v in _values(events, SAMPLE_TAG)]
    assert all(t.startswith("    " + PROMPT) for t in texts)
    r = mypt("generate", "tiny", "--prompt", PROMPT, "--max_new_tokens", "24", "--temperature", "0.8",
             "--top_k", "200", "--seed", "7")  # fmt: skip
    assert r.code == 0, r
    assert texts[-1] == "\n".join("    " + line for line in r.out.rstrip("\n").split("\n"))

    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = {k: v for k, v in session.session_start_info.hparams.items()}
    assert hparams["n_layer"].number_value == 2 and hparams["n_embd"].number_value == 32
    assert hparams["learning_rate"].number_value == 4e-3 and hparams["max_steps"].number_value == 20
    assert hparams["tokenizer"].string_value == "char"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in experiment.metric_infos} == {"val/loss", "val/bpb", "train/loss"}


def test_resumed_run_continues_its_curves(mypt, text_file):
    _fit(mypt, text_file, "--trainer.max_steps", "20")
    shutil.copytree("checkpoints/tiny", "saved_at_20")
    _fit(mypt, text_file, "--trainer.max_steps", "30")
    # a crash after step 30's metrics were written but before its bundle was: back to the step-20 bundle
    shutil.rmtree("checkpoints/tiny")
    shutil.copytree("saved_at_20", "checkpoints/tiny")
    _fit(mypt, text_file, "--trainer.max_steps", "40")

    events = _events()
    assert len(list(Path("logs/tiny").glob("events.out.tfevents.*"))) == 3  # one folder, three runs
    for tag in sorted(MYPT_SCALARS - {"tokens_per_sec", "mfu"}) + [SAMPLE_TAG]:
        steps = _steps(events, tag)
        assert steps == sorted(set(steps)), f"{tag} has steps out of order or twice: {steps}"
    assert _steps(events, "train/loss") == [4, 9, 14, 19, 24, 29, 34, 39]
    assert _steps(events, "val/loss") == [10, 20, 30, 40]
    assert _steps(events, SAMPLE_TAG) == [10, 20, 30, 40]
    tokens_per_sec = _steps(events, "tokens_per_sec")
    assert tokens_per_sec == sorted(set(tokens_per_sec)) and max(tokens_per_sec) == 39


def test_start_header_progress_lines_in_a_file_and_a_bar_on_a_terminal(mypt, text_file, monkeypatch):
    """Output to a file (CI, nohup): mypt's header, then plain lines (no carriage returns, no
    validation bars) and, when the run is long, its expected duration; on a terminal, a bar over the
    steps toward max_steps that a resumed run starts where the bundle stopped."""
    args = [*TINY, "--trainer.enable_progress_bar", "true", "--dashboard.max_new_tokens", "0"]
    monkeypatch.setattr(dashboard, "LONG_RUN_S", 0)  # every run counts as long
    r = mypt(
        "fit", *args, "--data.input_file", text_file, "--model_name", "tiny", "--trainer.max_steps", "20"
    )
    assert r.code == 0, r
    assert "\r" not in r.out + r.err and "Validation" not in r.out + r.err and "GPU available" not in r.err
    header = r.out.splitlines()[:3]
    assert (
        header[0].startswith("mypt: training checkpoints/tiny (a new model): ") and " parameters" in header[0]
    )
    assert (
        header[1]
        == "  64 tokens a step (batch 4 x block 16 x accumulate 1 x 1 rank), 20 steps, validating every 10"
    )
    assert header[2].startswith("  on 1 x cpu, precision 32-true")
    lines = [line for line in r.out.splitlines() if line.startswith("step")]
    assert lines[0].startswith("step 10/20  train/loss ") and "val/loss " in lines[0]
    assert lines[-1].startswith("step 20/20  train/loss ") and "tokens/s " in lines[-1]
    assert "steps left take about" in r.err and "configs/dante_cpu.yaml" in r.err, r.err

    monkeypatch.setattr(dashboard, "LONG_RUN_S", 3600)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    r = mypt("fit", *args, "--model_name", "tiny", "--trainer.max_steps", "30")
    assert r.code == 0, r
    # a resumed run says where it goes and how far that is
    assert "  64 tokens a step (batch 4 x block 16 x accumulate 1 x 1 rank), to step 30, 10 to go, " in r.out
    lines = [line for line in (r.out + r.err).replace("\r", "\n").split("\n") if line.startswith("step")]
    assert "20/30" in lines[0] and "30/30" in lines[-1]  # a resumed run starts where the bundle stopped
    assert "train/loss=" in lines[-1] and "val/loss=" in lines[-1]
    assert "steps left take about" not in r.err  # 10 steps are not a long run


def test_a_prompt_outside_the_vocabulary_stops_before_training(mypt, text_file):
    r = mypt("fit", *TINY, "--data.input_file", text_file, "--model_name", "tiny", "--trainer.max_steps", "5",
             "--dashboard.prompt", "§", "--dashboard.max_new_tokens", "10")  # fmt: skip
    assert r.code == 2 and r.err.startswith("mypt: error: --dashboard.prompt:") and "'§'" in r.err
    assert not Path("checkpoints/tiny").exists()


def test_time_left_counts_training_steps_only(mypt, text_file, monkeypatch):
    """The time left comes from the time of this run's training steps: not its first step (start-up,
    a resume's restore), not its validations and saves. A fake clock: 2 s a training step, 300 s at
    a run's first step, 500 s a validation batch."""
    from mypt.module import GPTModule

    clock = {"now": 0.0}
    monkeypatch.setattr(dashboard, "now", lambda: clock["now"])
    monkeypatch.setattr(dashboard, "LONG_RUN_S", 0)  # every run says how long it takes
    train_step, validation_step = GPTModule.training_step, GPTModule.validation_step

    def slow_train(self, batch, batch_idx):
        clock["now"] += 300.0 if clock.pop("first", False) else 2.0
        return train_step(self, batch, batch_idx)

    def slow_validation(self, batch, batch_idx):
        clock["now"] += 500.0
        return validation_step(self, batch, batch_idx)

    monkeypatch.setattr(GPTModule, "training_step", slow_train)
    monkeypatch.setattr(GPTModule, "validation_step", slow_validation)
    args = [*TINY, "--trainer.enable_progress_bar", "true", "--data.input_file", text_file,
            "--model_name", "tiny"]  # fmt: skip

    def time_left(out: str) -> dict[int, str]:
        """step -> the time left on the last progress line of that step."""
        left = {}
        for line in out.splitlines():
            if line.startswith("step ") and line.endswith(" left"):
                left[int(line.split()[1].split("/")[0])] = line.rsplit("  ", 1)[1]
        return left

    clock["first"] = True
    r = mypt("fit", *args, "--trainer.max_steps", "40")
    assert r.code == 0, r
    assert time_left(r.out) == {10: "1 min left", 20: "40 s left", 30: "20 s left"}, r.out
    # the estimate after the first steps: 2 s a step, the steps after step 11 (the first + 10)
    assert "mypt: about 2 s a step: the 29 steps left take about 58 s on this cpu" in r.err, r.err
    clock["first"] = True
    r = mypt("fit", *args, "--trainer.max_steps", "80")  # resumed: its first step restores, slowly
    assert r.code == 0, r
    assert time_left(r.out) == {50: "1 min left", 60: "40 s left", 70: "20 s left"}, r.out
    assert "mypt: about 2 s a step: the 29 steps left take about 58 s on this cpu" in r.err, r.err
