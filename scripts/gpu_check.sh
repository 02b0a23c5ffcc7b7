#!/usr/bin/env bash
# The checks and figures to take when a machine with a CUDA GPU is at hand (docs/benchmarks.md, "GPU").
#
#   OUT=gpu_figures scripts/gpu_check.sh          # uses make install's .venv
#   PY=python3 OUT=gpu_figures scripts/gpu_check.sh  # an interpreter that has mypt's dependencies
#
# Needs data/divina_commedia.txt and data/tinyshakespeare.txt (`make data`) and, for bench-gpu, GPT-2's
# BPE files (the gpt2 tokenizer). In order: the quick suite, 300 steps of configs/dante.yaml, the time
# to nanoGPT's loss (its recipe for 2,000 steps, the default in a third of that time), make bench-gpu,
# that GPU bundle resumed on the CPU and back, generation tokens/s with the slices in model.py against
# the list indexing they replaced, 16-mixed with clipping (grad_norm after unscaling)
# beside bf16-mixed, and with two GPUs or more FSDP's peak memory with and without the per-Block
# wrap policy. $OUT gets four files: summary.txt (every figure), bench_gpu.json, inspect.json and
# logs.tar.gz (each step's output). Expected about 10 minutes on an H100 (not yet measured); the
# quick suite and bench-gpu are cut at 4 minutes each.
set -uo pipefail
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then make install data || exit 1; PY=.venv/bin/python; fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
MAKE=(make -o install -o data "PY=$PY" "MYPT=$PY -m mypt")
SUMMARY="$OUT/summary.txt"
WORK=$(mktemp -d)
LOGS="$WORK/logs"
mkdir -p "$LOGS"
note() { echo "$*" | tee -a "$SUMMARY"; }
step() { note ""; note "== $1 ($(date +%H:%M:%S))"; }
quiet=(--trainer.enable_progress_bar false)
MODELS=(gpucheck ttl_nanogpt ttl_default p16-mixed pbf16-mixed fsdp_block fsdp_one)  # this script's own bundles, made afresh
for name in "${MODELS[@]}"; do rm -rf "checkpoints/$name" "logs/$name"; done

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$SUMMARY"
"$PY" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__,
'bf16 native', torch.cuda.is_bf16_supported(including_emulation=False))" | tee -a "$SUMMARY"
GPUS=$(nvidia-smi -L | wc -l)

step "make test"
timeout 240 "${MAKE[@]}" test >"$LOGS/test.log" 2>&1
rc=$?
note "make test: exit $rc ($(tail -1 "$LOGS/test.log"))"

step "make fit CONFIG=configs/dante.yaml, 300 steps"
start=$(date +%s)
"${MAKE[@]}" fit CONFIG=configs/dante.yaml \
    ARGS="--model_name gpucheck --trainer.max_steps 300 --trainer.val_check_interval 150 ${quiet[*]}" \
    >"$LOGS/fit.log" 2>&1
rc=$?
note "fit: exit $rc, $(($(date +%s) - start)) s (tokens/s and MFU below, from its TensorBoard log)"
if grep -q "set_float32_matmul_precision" "$LOGS/fit.log"; then note "TF32: Lightning's tensor-core hint printed (TF32 NOT set)"
else note "TF32: set (no tensor-core hint)"; fi

step "time to loss: nanoGPT's recipe for 2,000 steps, then mypt's default in a third of its time (dante.yaml)"
# the GPU form of benchmarks/time_to_loss.py: the same config, nanoGPT's flags (configs/nanogpt_cpu.yaml's)
# against the defaults, each run's whole wall time counted (start-up and compiling included)
nanogpt=(--model.pos_emb learned --model.norm layernorm --model.qk_norm false --model.mlp gelu
         --model.tie_embeddings true --model.zero_init_proj false --model.optimizer adamw
         --model.lr_schedule cosine --model.learning_rate 1e-3)
ttl=(--config configs/dante.yaml --trainer.val_check_interval 250 --dashboard.max_new_tokens 0 "${quiet[@]}")
start=$(date +%s)
timeout 300 "$PY" -m mypt fit "${ttl[@]}" "${nanogpt[@]}" --model_name ttl_nanogpt --trainer.max_steps 2000 \
    >"$LOGS/ttl_nanogpt.log" 2>&1
note "nanoGPT's recipe: exit $?, $(($(date +%s) - start)) s"
nanogpt_s=$(($(date +%s) - start))
for part in 3 2; do  # a third of its time; half where a third is under mypt's start-up and compiling
    budget=$((nanogpt_s / part))
    start=$(date +%s)
    timeout 300 "$PY" -m mypt fit "${ttl[@]}" --model_name ttl_default \
        --trainer.max_time "$(printf '00:%02d:%02d:%02d' $((budget / 3600)) $((budget % 3600 / 60)) $((budget % 60)))" \
        >"$LOGS/ttl_default.log" 2>&1
    rc=$?
    note "mypt's default, a budget of ${budget} s (1/$part of nanoGPT's): exit $rc, $(($(date +%s) - start)) s"
    [ $rc -eq 0 ] && break
done
"$PY" - <<'PY' | tee -a "$SUMMARY"
import json
runs = {name: json.load(open(f"checkpoints/{name}/training_state.json")) for name in ("ttl_nanogpt", "ttl_default")}
for name, state in runs.items():
    print(f"{name}: {state['step']} steps, val loss {state['val_loss']:.4f}, {state['val_bpb']:.4f} bits per byte")
gap = runs["ttl_nanogpt"]["val_loss"] - runs["ttl_default"]["val_loss"]
print(f"default in the budget above: {gap:+.4f} below nanoGPT's recipe ({'reached' if gap >= 0 else 'NOT reached'})")
PY

step "make bench-gpu"
timeout 240 "${MAKE[@]}" bench-gpu >"$LOGS/bench_gpu.log" 2>&1
note "bench-gpu: exit $?"
grep -E "GPU|mypt/plain" "$LOGS/bench_gpu.log" | tee -a "$SUMMARY"
cp benchmarks/results/latest.json "$OUT/bench_gpu.json" 2>/dev/null

step "the GPU bundle resumed on the CPU, then on the GPU again"
"$PY" -m mypt fit --ckpt_path checkpoints/gpucheck --trainer.max_steps 305 --trainer.accelerator cpu \
    "${quiet[@]}" >"$LOGS/resume.log" 2>&1
note "resume on the CPU: exit $?"
"$PY" -m mypt fit --ckpt_path checkpoints/gpucheck --trainer.max_steps 310 --trainer.accelerator gpu \
    "${quiet[@]}" >>"$LOGS/resume.log" 2>&1
note "resume on the GPU: exit $?"
"$PY" -m mypt inspect checkpoints/gpucheck --json >"$OUT/inspect.json"
"$PY" -c "import json; h = json.load(open('checkpoints/gpucheck/training_state.json'))['history']
print('history:', [(r['end_step'], r['device'], r['world_size']) for r in h])" | tee -a "$SUMMARY"

step "generation tokens/s: slices (now) vs list indexing (before)"
mkdir -p "$WORK/before" && cp -r src/mypt "$WORK/before/"
sed -i 's/x\[:, -1:, :\]/x[:, [-1], :]/; s/v\[:, -1:\]/v[:, [-1]]/' "$WORK/before/mypt/model.py"
note "list indexing restored in $(grep -c '\[-1\]\]' "$WORK/before/mypt/model.py") places of the copy"
for version in now before; do
    src=src; [ "$version" = before ] && src="$WORK/before"
    PYTHONPATH="$src:benchmarks" "$PY" - "$version" <<'PY' | tee -a "$SUMMARY"
import sys
from generation import generation_speed
from mypt.model import GPTConfig
from mypt.tokenizer import CharTokenizer
char = CharTokenizer(sorted(set(open("data/divina_commedia.txt", encoding="utf-8").read())))
config = GPTConfig(vocab_size=char.vocab_size, block_size=256, n_layer=6, n_head=6, n_embd=384)  # dante.yaml
generation_speed(config, char, 32, repeats=1, device="cuda")  # warm-up
r = generation_speed(config, char, 255, repeats=5, device="cuda")
print(f"generate {sys.argv[1]}: {r['tokens_per_sec']:.0f} tokens/s (dante.yaml model, 255 tokens, KV cache)")
PY
done

step "16-mixed with clipping, beside bf16-mixed (200 steps of dante.yaml, clip 1.0)"
for precision in 16-mixed bf16-mixed; do
    "$PY" -m mypt fit --config configs/dante.yaml --model_name "p$precision" --trainer.max_steps 200 \
        --trainer.precision "$precision" --trainer.gradient_clip_val 1.0 --trainer.val_check_interval 200 \
        --trainer.log_every_n_steps 10 --dashboard.max_new_tokens 0 "${quiet[@]}" >"$LOGS/fit_$precision.log" 2>&1
    note "$precision: exit $?"
done
"$PY" - <<'PY' | tee -a "$SUMMARY"
import json
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

def logged(name: str, tag: str) -> list[float]:
    events = EventAccumulator(f"logs/{name}", size_guidance={"tensors": 0})
    events.Reload()
    return [float(make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)] if tag in events.Tags()["tensors"] else []


rates, mfu = logged("gpucheck", "tokens_per_sec"), logged("gpucheck", "mfu")
print(f"dante.yaml fit (float32, TF32): last tokens/s {rates[-1]:,.0f}" + (f", MFU {mfu[-1]:.1%}" if mfu else ""))
for precision in ("16-mixed", "bf16-mixed"):
    norms = logged(f"p{precision}", "grad_norm")
    state = json.load(open(f"checkpoints/p{precision}/training_state.json"))
    print(f"{precision}: val_loss {state['val_loss']:.4f}, grad_norm first/last {norms[0]:.3g}/{norms[-1]:.3g} "
          f"(max {max(norms):.3g}: not ~65536x the bf16 figures)")
PY

if [ "$GPUS" -ge 2 ]; then
    step "FSDP peak memory over 2 GPUs: per-Block units (the fsdp alias) vs one unit"
    big=(--config configs/dante.yaml --model.n_layer 12 --model.n_head 12 --model.n_embd 768
         --trainer.max_steps 20 --trainer.val_check_interval 20 --trainer.limit_val_batches 2
         --trainer.devices 2 --trainer.precision bf16-mixed --dashboard.max_new_tokens 0 "${quiet[@]}")
    for wrap in block one; do
        strategy=fsdp; [ "$wrap" = one ] && strategy=mypt.fsdp.BundleFSDPStrategy
        probe="[{\"class_path\": \"peak_memory.PeakMemory\", \"init_args\": {\"out_file\": \"$LOGS/fsdp_$wrap.json\"}}]"
        PYTHONPATH="$PYTHONPATH:scripts" "$PY" -m mypt fit "${big[@]}" --model_name "fsdp_$wrap" \
            --trainer.strategy "$strategy" --trainer.callbacks "$probe" >"$LOGS/fsdp_$wrap.log" 2>&1
        note "FSDP, $wrap unit(s): exit $?, peak GiB per rank $(cat "$LOGS/fsdp_$wrap.json" 2>/dev/null)"
    done
else
    note ""; note "FSDP peak memory: skipped ($GPUS GPU)"
fi
tar czf "$OUT/logs.tar.gz" -C "$WORK" logs
rm -rf "$WORK"
note ""; note "done $(date +%H:%M:%S); figures and logs in $OUT"
