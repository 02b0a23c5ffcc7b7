"""`make bench`: mypt's speed, side by side with plain PyTorch, as a table and a JSON file.

    python benchmarks/run.py            # every figure on this machine's CPU (under 10 minutes on 2 cores)
    python benchmarks/run.py --quick    # tiny settings: checks that the harness runs (seconds, not figures)
    python benchmarks/run.py --gpu      # GPT-2 124M on one CUDA GPU: bf16 (fp16 before Ampere), compile, MFU

What each figure means and the latest results are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import REPO, find_text
from convergence import precision_gap
from generation import generation_speed
from storage import checkpoint_cost, data_cost, inspect_cost
from time_to_loss import measure as time_to_loss
from tokenisation import shard_training, tokenisation_cost
from training import compare, load_config, mypt_choice

from mypt.model import GPT, GPTConfig
from mypt.precision import keep_freed_memory, measured_cpu_flops, peak_flops
from mypt.tokenizer import CharTokenizer, GPT2Tokenizer

CONFIGS = REPO / "configs"
HERE = Path(__file__).resolve().parent

# steps, block (steps per turn), warm-up steps dropped: full run / --quick; "design": the design note's
# model (the CPU config under --quick, which checks the harness only); "gap": steps of the bf16/float32
# comparison and its validation interval
FULL = {
    "cpu": (220, 20, 40), "gpt2": (50, 10, 10), "compile": (160, 20, 60), "rss_steps": 100,
    "design": ("dante.yaml", 24, 4, 4), "gap": (300, 100),
}  # fmt: skip
QUICK = {
    "cpu": (24, 6, 2), "gpt2": (6, 3, 1), "compile": None, "rss_steps": 6,
    "design": ("dante_cpu.yaml", 6, 3, 1), "gap": (4, 2),
}  # fmt: skip


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# -- the sections ------------------------------------------------------------------------------


def training_section(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    # two identical loops: their ratio is the noise floor; the plain loops train in the precision mypt
    # chooses, except plain_float32
    guests = {"plain": {}, "plain_again": {}, "plain_float32": {"amp": None}}
    if not quick:
        guests |= {
            "plain_foreach": {"optimizer_impl": "foreach"},
            "plain_forloop": {"optimizer_impl": "for-loop"},
        }
    out = {"cpu_config": compare(CONFIGS / "dante_cpu.yaml", *plan["cpu"], guests=guests)}
    out["gpt2_config"] = compare(CONFIGS / "shakespeare_gpt2.yaml", *plan["gpt2"], guests={"plain": {}})
    if plan["compile"]:
        out["compile"] = compare(
            CONFIGS / "dante_cpu.yaml",
            *plan["compile"],
            guests={"plain": {}, "plain_compiled": {"compile": True}},
            mypt_args=("--model.compile", "true"),
        )
    rss = {}
    for kind in ("mypt", "plain"):
        command = [sys.executable, str(HERE / "training.py"), "rss", kind, str(CONFIGS / "dante_cpu.yaml")]
        result = subprocess.run(
            [*command, str(plan["rss_steps"])], capture_output=True, text=True, check=True
        )
        rss[kind] = float(result.stdout.strip().splitlines()[-1])
    out["peak_rss_mb"] = rss
    return out


def precision_section(quick: bool) -> dict:
    """The automatic precision: the design note's model in mypt's choice against float32 and against
    the plain loop in the same precision; bf16's validation loss against float32's; MFU against this
    CPU's matmul peak, measured here."""
    plan = QUICK if quick else FULL
    config, *steps = plan["design"]
    guests = {"plain": {}, "plain_float32": {"amp": None}}
    out = {"design_note": compare(CONFIGS / config, *steps, guests=guests), "config": config}
    threads = torch.get_num_threads()
    # the peak `mypt fit` measured at its start (cached) and a fresh one after the runs, the higher kept:
    # other jobs on the cores lower a measurement
    peaks = {
        name: max(measured_cpu_flops(dtype, threads), measured_cpu_flops.__wrapped__(dtype, threads))
        for name, dtype in (("bf16", torch.bfloat16), ("float32", torch.float32))
    }
    out["cpu_peak_flops"] = peaks
    cfg = load_config(CONFIGS / config)
    out["choice"] = mypt_choice(cfg).record()
    model = GPTConfig(
        vocab_size=80, **{k: cfg["model"][k] for k in ("n_layer", "n_head", "n_embd", "block_size")}
    )
    with torch.device("meta"):
        flops = GPT(model).flops_per_token()
    for row in out["design_note"].values():
        row["mfu_bf16_peak"] = flops * row["tokens_per_sec"] / peaks["bf16"]
    out["precision_gap"] = precision_gap(CONFIGS / "dante_cpu.yaml", *plan["gap"])
    return out


def time_to_loss_section(quick: bool) -> dict:
    """nanoGPT's recipe against mypt's default: time to nanoGPT's loss, loss at equal time, step costs.
    A short form (nanoGPT for 1,000 steps, about 2.5 minutes): `python benchmarks/time_to_loss.py` gives
    the full figures of docs/benchmarks.md (2,000 steps and the ablation)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the benchmark's times are one thread's CPU time
    keep_freed_memory()  # as `mypt fit` does on a CPU
    try:
        return time_to_loss("smoke" if quick else "quick")
    finally:
        torch.set_num_threads(threads)


def storage_section(quick: bool) -> dict:
    # the design note's model (configs/dante.yaml), and for inspect a ~500 MB GPT (120M parameters)
    dante = GPTConfig(block_size=256, vocab_size=80, n_layer=6, n_head=6, n_embd=384)
    large = GPTConfig(block_size=1024, vocab_size=50304, n_layer=6, n_head=16, n_embd=1024)
    if quick:
        dante = large = GPTConfig(block_size=32, vocab_size=80, n_layer=2, n_head=2, n_embd=64)
    return {
        "checkpoint": checkpoint_cost(dante, repeats=1 if quick else 5),
        "inspect": inspect_cost(large, repeats=1 if quick else 3),
        "data": data_cost((1,) if quick else (25, 50)),
    }


def corpus_section(quick: bool) -> dict:
    # char at 250 MB and 1 GB (peak memory must not grow with the corpus); GPT-2 at 250 MB, whose
    # one-core run alone takes about a minute here
    if quick:  # the harness only; training from shards is tested through `mypt fit` in tests/test_corpus.py
        return {"tokenisation": tokenisation_cost({"char": (1,)})}
    plan = {"char": (250, 1000), "gpt2": (250,)}
    return {"tokenisation": tokenisation_cost(plan), "shards": shard_training(60, 2, 10)}


def generation_section(quick: bool) -> dict:
    text = find_text("divina_commedia.txt").read_text()
    char = CharTokenizer(sorted(set(text)))
    cfg = {"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128}  # configs/dante_cpu.yaml
    n = 20 if quick else 300
    # the KV cache within one block: the design note's model (configs/dante.yaml), block_size 256
    dante = GPTConfig(vocab_size=char.vocab_size, block_size=256, n_layer=6, n_head=6, n_embd=384)
    m = 10 if quick else 128
    return {
        "char": generation_speed(GPTConfig(vocab_size=char.vocab_size, **cfg), char, n, repeats=3),
        "gpt2": generation_speed(GPTConfig(vocab_size=50304, **cfg), GPT2Tokenizer(), n // 3, repeats=3),
        "dante_cache": generation_speed(dante, char, m, repeats=3),
        "dante_no_cache": generation_speed(dante, char, m, repeats=3, use_cache=False),
    }


def gpu_plan(bf16_native: bool) -> tuple[list[str], dict]:
    """mypt's arguments over benchmarks/gpt2_124m.yaml, and the plain loop's options, for the GPU run.

    One device, named: with Lightning's default devices="auto" a machine with several GPUs would start
    DDP, whose launcher re-runs this script's path from the benchmark's temporary folder and fails.
    bf16 where the GPU computes it natively; elsewhere (before Ampere torch reports bf16 as supported
    because it is emulated, and the figures would mean nothing) fp16 with a loss scaler."""
    precision, amp = ("bf16-mixed", "bf16") if bf16_native else ("16-mixed", "fp16")
    mypt_args = ["--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.precision", precision]
    plain = {"device": "cuda:0", "amp": amp, "compile": True, "optimizer_impl": "fused"}
    return mypt_args, plain


def gpu_section(quick: bool) -> dict:
    """GPT-2 124M, bf16-mixed (or 16-mixed), compiled, fused AdamW, on one GPU: mypt against the plain
    loop, and MFU."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU on this machine"}
    steps = (30, 10, 10) if quick else (200, 20, 40)
    torch.set_float32_matmul_precision("high")  # TF32, as `mypt fit` sets on CUDA
    mypt_args, plain = gpu_plan(torch.cuda.is_bf16_supported(including_emulation=False))
    result = compare(HERE / "gpt2_124m.yaml", *steps, guests={"plain": plain}, mypt_args=tuple(mypt_args))
    config = GPTConfig(block_size=1024, vocab_size=50304, n_layer=12, n_head=12, n_embd=768)
    with torch.device("meta"):  # the arithmetic only: no weights allocated
        flops = GPT(config).flops_per_token()
    peak = peak_flops(torch.device("cuda", 0), mypt_args[-1])  # Lightning's figure for this GPU
    for row in result.values():
        row["mfu"] = flops * row["tokens_per_sec"] / peak if peak else None
    return {
        "gpt2_124m": result,
        "device": torch.cuda.get_device_name(0),
        "precision": mypt_args[-1],
        "peak_flops": peak,
    }


# -- the table ---------------------------------------------------------------------------------


def table(results: dict) -> list[tuple[str, str, str]]:
    """(figure, value, target and verdict) rows."""
    rows: list[tuple[str, str, str]] = []

    def verdict(ok: bool, target: str) -> str:
        return f"{target}: {'met' if ok else 'NOT MET'}"

    t = results.get("training")
    if t:
        for name, label in (("cpu_config", "CPU config (char)"), ("gpt2_config", "GPT-2 tokenizer config")):
            r = t[name]
            ratio = r["mypt"]["tokens_per_sec"] / r["plain"]["tokens_per_sec"]
            cpu_ratio = r["mypt"]["cpu_tokens_per_sec"] / r["plain"]["cpu_tokens_per_sec"]
            rows.append((f"train {label}: mypt tokens/s", f"{r['mypt']['tokens_per_sec']:,.0f}", ""))
            rows.append((f"train {label}: plain loop tokens/s", f"{r['plain']['tokens_per_sec']:,.0f}", ""))
            target = verdict(ratio >= 0.97, ">= 0.97") if name == "cpu_config" else ""
            rows.append((f"train {label}: mypt/plain (wall)", f"{ratio:.3f}", target))
            rows.append((f"train {label}: mypt/plain (CPU time)", f"{cpu_ratio:.3f}", ""))
            mean = r["mypt"]["mean_tokens_per_sec"] / r["plain"]["mean_tokens_per_sec"]
            rows.append((f"train {label}: mypt/plain, mean incl. eval+save", f"{mean:.3f}", ""))
        r = t["cpu_config"]
        auto = r["plain"]["tokens_per_sec"] / r["plain_float32"]["tokens_per_sec"]
        rows.append(("CPU config: automatic precision / float32 (plain loops)", f"{auto:.3f}",
                     verdict(auto >= 1.0, ">= 1.0")))  # fmt: skip
        noise = r["plain_again"]["tokens_per_sec"] / r["plain"]["tokens_per_sec"]
        rows.append(("noise floor: plain/identical plain (wall)", f"{noise:.3f}", "1.000 on a quiet machine"))
        for impl in ("foreach", "forloop"):
            if f"plain_{impl}" in r:
                speed = r[f"plain_{impl}"]["tokens_per_sec"] / r["plain"]["tokens_per_sec"]
                rows.append((f"AdamW {impl} / fused (plain loop)", f"{speed:.3f}", ""))
        if "compile" in t:
            c = t["compile"]
            speed = c["plain_compiled"]["tokens_per_sec"] / c["plain"]["tokens_per_sec"]
            rows.append(
                ("torch.compile / eager (plain loop)", f"{speed:.3f}", verdict(speed >= 1.3, ">= 1.3"))
            )
            mypt = c["mypt"]["tokens_per_sec"] / c["plain"]["tokens_per_sec"]
            rows.append(("mypt compiled / plain eager", f"{mypt:.3f}", ""))
        rss = t["peak_rss_mb"]
        rows.append(("peak RSS MB: mypt fit / plain loop", f"{rss['mypt']:.0f} / {rss['plain']:.0f}", ""))
    p = results.get("precision")
    if p:
        r, label = p["design_note"], f"{p['config']} ({p['choice']['precision']})"
        rows.append((f"train {label}: mypt tokens/s", f"{r['mypt']['tokens_per_sec']:,.0f}", ""))
        speed = r["mypt"]["tokens_per_sec"] / r["plain_float32"]["tokens_per_sec"]
        rows.append((f"train {label}: mypt / plain float32", f"{speed:.2f}", verdict(speed >= 2.5, ">= 2.5")))
        ratio = r["mypt"]["tokens_per_sec"] / r["plain"]["tokens_per_sec"]
        rows.append(
            (
                f"train {label}: mypt / plain, same precision",
                f"{ratio:.3f}",
                verdict(ratio >= 0.97, ">= 0.97"),
            )
        )
        peak = p["cpu_peak_flops"]
        rows.append(("CPU matmul peak GFLOP/s: bf16 / float32", f"{peak['bf16'] / 1e9:,.0f} / {peak['float32'] / 1e9:,.0f}",
                     f"{torch.get_num_threads()} threads, 1024^3 products"))  # fmt: skip
        mfu = " / ".join(f"{r[name]['mfu_bf16_peak']:.1%}" for name in ("mypt", "plain", "plain_float32"))
        rows.append((f"train {label}: MFU vs bf16 peak, mypt / plain / plain float32", mfu, ""))
        gap = p["precision_gap"]
        rows.append((f"val/loss bf16 - float32, 4 x 256, {gap['steps']} steps (largest)", f"{gap['gap']:.4f}",
                     verdict(gap["gap"] <= 0.02, "<= 0.02")))  # fmt: skip
    s = results.get("storage")
    if s:
        c = s["checkpoint"]
        rows.append(("bundle write s / torch.save s", f"{c['bundle_write_s']:.3f} / {c['torch_save_s']:.3f}",
                     verdict(c["write_ratio"] <= 1.10, "ratio <= 1.10") + f" ({c['write_ratio']:.2f})"))  # fmt: skip
        rows.append(("bundle read s / torch.load s", f"{c['bundle_read_s']:.3f} / {c['torch_load_s']:.3f}",
                     f"ratio {c['read_ratio']:.2f}"))  # fmt: skip
        rows.append(
            ("bundle bytes / torch.save bytes", f"{c['bundle_bytes']:,} / {c['torch_save_bytes']:,}", "")
        )
        i = s["inspect"]
        mb = i["large_bytes"] / 1e6
        rows.append((f"get_model_info, {mb:.0f} MB bundle (s)", f"{i['large_get_model_info_s']:.4f}",
                     verdict(i["large_get_model_info_s"] < 0.5, "< 0.5 s")))  # fmt: skip
        rows.append((f"mypt inspect, {mb:.0f} MB / tiny bundle (s)",
                     f"{i['large_mypt_inspect_s']:.2f} / {i['tiny_mypt_inspect_s']:.2f}",
                     verdict(i["large_mypt_inspect_s"] < 0.5, "< 0.5 s, the process")))  # fmt: skip
        for key, d in s["data"].items():
            rows.append((f"tokenise {key} (MB/s)", f"{d['tokenise_mb_per_s']:.1f}", ""))
            rows.append((f"cached load {key}: s (speedup)", f"{d['cached_s']:.3f} ({d['speedup']:.0f}x)",
                         verdict(d["speedup"] >= 20, ">= 20x")))  # fmt: skip
            rows.append((f"peak RSS {key}: first / cached load (MB over imports)",
                         f"{max(0.0, d['first_peak_rss_mb'] - d['import_rss_mb']):.0f} / "
                         f"{max(0.0, d['cached_peak_rss_mb'] - d['import_rss_mb']):.0f}",
                         f"token array {d['array_mb']:.0f} MB"))  # fmt: skip
    c = results.get("corpus")
    if c:
        t = c["tokenisation"]
        for key, d in t.items():
            if key == "cores":
                continue
            speed = verdict(d["speedup"] >= 1.8, ">= 1.8x") if t["cores"] == 2 else f"on {t['cores']} cores"
            rows.append((f"tokenise {key} folder: MB/s 1 core / {t['cores']} cores",
                         f"{d['one_core_mb_per_s']:.1f} / {d['all_cores_mb_per_s']:.1f}",
                         f"{speed} ({d['speedup']:.2f}x; {d['per_core_mb_per_s']:.1f} MB/s per core)"))  # fmt: skip
            rows.append((f"cached reload {key}: s (speedup over first)",
                         f"{d['cached_s']:.3f} ({d['cached_speedup']:.0f}x)",
                         verdict(d["cached_speedup"] >= 100, ">= 100x")))  # fmt: skip
            rows.append(
                (
                    f"peak RSS MB {key} (process + workers): 1 core / all",
                    f"{d['peak_tree_mb_one']:.0f} / {d['peak_tree_mb_all']:.0f}",
                    "",
                )
            )
        sizes = sorted((int(k.split("_")[1][:-2]), k) for k in t if k.startswith("char_"))
        if len(sizes) > 1:
            small, large = t[sizes[0][1]], t[sizes[-1][1]]
            flat = large["peak_tree_mb_all"] / small["peak_tree_mb_all"]
            rows.append((f"peak RSS char {sizes[-1][0]} MB / {sizes[0][0]} MB folder", f"{flat:.2f}",
                         verdict(flat <= 1.10, "<= 1.10, flat in corpus size")))  # fmt: skip
        s = c.get("shards", {})
        if s:
            rows.append(("train tokens/s from llm.c shards / from the text (shakespeare_gpt2)",
                     f"{s['shards']['tokens_per_sec']:,.0f} / {s['text']['tokens_per_sec']:,.0f}",
                     verdict(s["ratio"] >= 0.98, ">= 0.98") + f" ({s['ratio']:.3f})"))  # fmt: skip
    g = results.get("generation")
    if g:
        for kind in ("char", "gpt2"):
            rows.append((f"generate tokens/s ({kind}, CPU config, {g[kind]['new_tokens']} tokens)",
                         f"{g[kind]['tokens_per_sec']:.0f}", "KV cache for the first block_size 64"))  # fmt: skip
        if "dante_cache" in g:
            cached, plain = g["dante_cache"]["tokens_per_sec"], g["dante_no_cache"]["tokens_per_sec"]
            rows.append((f"generate tokens/s, dante.yaml model, {g['dante_cache']['new_tokens']} tokens: "
                         "cache / none", f"{cached:.0f} / {plain:.0f}", f"KV cache speedup {cached / plain:.1f}x"))  # fmt: skip
    tl = results.get("time_to_loss")
    if tl:
        steps = tl["nanogpt_steps"]
        if tl["time_to_target_ratio"] is not None:
            rows.append((f"time to nanoGPT's {steps}-step val loss: mypt default / nanoGPT", f"{tl['time_to_target_ratio']:.2f}",
                         verdict(tl["time_to_target_ratio"] <= 0.33, "<= 0.33") + " (the full form: time_to_loss.py)"))  # fmt: skip
        else:
            rows.append(
                (f"time to nanoGPT's {steps}-step val loss: mypt default / nanoGPT", "not reached", "")
            )
        rows.append((f"val loss at equal time ({tl['equal_time_cpu_s']:.0f} CPU s): nanoGPT - mypt default",
                     f"{tl['equal_time_gap']:+.3f}", verdict(tl["equal_time_gap"] >= 0.05, ">= 0.05")))  # fmt: skip
        cost = tl["step_cost_ratio_modern_vs_nanogpt_fp32"]
        rows.append(
            (
                "step cost: modern block / nanoGPT's (AdamW, float32)",
                f"{cost:.2f}",
                verdict(cost <= 1.15, "<= 1.15"),
            )
        )
    gpu = results.get("gpu")
    if gpu and "skipped" not in gpu:
        r = gpu["gpt2_124m"]
        for name in ("mypt", "plain"):
            mfu = r[name]["mfu"]
            rows.append((f"GPU GPT-2 124M {gpu.get('precision', '')} {name} tokens/s (MFU)",
                         f"{r[name]['tokens_per_sec']:,.0f} ({mfu:.1%})" if mfu else f"{r[name]['tokens_per_sec']:,.0f}", ""))  # fmt: skip
        ratio = r["mypt"]["tokens_per_sec"] / r["plain"]["tokens_per_sec"]
        rows.append(("GPU mypt/plain", f"{ratio:.3f}", ""))
    return rows


def print_table(rows: list[tuple[str, str, str]]) -> None:
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for name, value, note in rows:
        print(f"{name.ljust(w0)}  {value.rjust(w1)}  {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke test of the harness")
    parser.add_argument(
        "--gpu", action="store_true", help="the GPU benchmark (GPT-2 124M) instead of the CPU one"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument(
        "--only",
        choices=("training", "precision", "storage", "corpus", "generation", "time_to_loss"),
        action="append",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json", help="JSON output")
    args = parser.parse_args(argv)
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)  # --quick checks the harness, not the figures
        os.environ["OMP_NUM_THREADS"] = str(args.threads or 1)  # and for the child processes
    started = time.perf_counter()
    results: dict = {"machine": machine(), "quick": args.quick}
    if args.gpu:
        results["gpu"] = gpu_section(args.quick)
        if "skipped" in results["gpu"]:
            # nothing measured: the last results file (the CPU figures of `make bench`) is left as it was
            print(f"bench-gpu: skipped: {results['gpu']['skipped']} (run `make bench` for the CPU figures)")
            return 0
    else:
        sections = {
            "training": training_section,
            "precision": precision_section,
            "storage": storage_section,
            "corpus": corpus_section,
            "generation": generation_section,
            "time_to_loss": time_to_loss_section,
        }
        for name, section in sections.items():
            if not args.only or name in args.only:
                print(f"benchmark: {name} ...", file=sys.stderr, flush=True)
                start = time.perf_counter()
                results[name] = section(args.quick)
                results.setdefault("section_seconds", {})[name] = time.perf_counter() - start
    results["seconds"] = time.perf_counter() - started
    results["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    rows = table(results)
    if rows:
        print_table(rows)
    print(f"({results['seconds']:.0f} s; JSON in {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
