#!/usr/bin/env bash
# Train two small models, open TensorBoard on them in headless Chromium, and save screenshots to docs/.
# Not part of the test suite: a real look at what `tensorboard --logdir logs` shows a user.
# Needs Debian's chromium (apt-get install -y chromium) and the Divina Commedia text.
#   scripts/screenshot_tensorboard.sh [path/to/divina_commedia.txt]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
TEXT=$(realpath "${1:-$REPO/../shared/data/divina_commedia.txt}")
STEPS=${STEPS:-300}
PORT=${PORT:-6123}
WORK=$(mktemp -d)
trap 'kill "$TB_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
TB_PID=""
cd "$WORK"
export MYPT_CACHE_DIR="$WORK/cache"
common=(--data.input_file "$TEXT" --trainer.max_steps "$STEPS" --trainer.val_check_interval 50
        --trainer.limit_val_batches 10 --trainer.log_every_n_steps 10 --trainer.enable_progress_bar false
        --trainer.enable_model_summary false --dashboard.prompt "Nel mezzo" --dashboard.max_new_tokens 120)
"$REPO/.venv/bin/mypt" fit --config "$REPO/configs/dante_cpu.yaml" --model_name dante_4x128 "${common[@]}"
"$REPO/.venv/bin/mypt" fit --config "$REPO/configs/dante_cpu.yaml" --model_name dante_2x64 \
  --model.n_layer 2 --model.n_head 2 --model.n_embd 64 "${common[@]}"

"$REPO/.venv/bin/tensorboard" --logdir logs --host 127.0.0.1 --port "$PORT" >tensorboard.log 2>&1 &
TB_PID=$!
for _ in $(seq 60); do
  curl -sf "http://127.0.0.1:$PORT/" >/dev/null && break
  sleep 1
done

shoot() {  # shoot PAGE FILE
  rm -rf "$WORK/profile" && mkdir "$WORK/profile"
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$WORK/profile" --hide-scrollbars \
    --window-size=1500,1100 --virtual-time-budget=20000 --screenshot="$2" \
    "http://127.0.0.1:$PORT/$1" 2>/dev/null
  echo "saved $2"
}
shoot "#scalars&tagFilter=loss%7Clr%7Cgrad_norm%7Ctokens_per_sec&_smoothingWeight=0" "$REPO/docs/tensorboard.png"
shoot "#hparams" "$REPO/docs/tensorboard_hparams.png"
shoot "#text" "$REPO/docs/tensorboard_text.png"
