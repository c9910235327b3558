#!/usr/bin/env bash
# The PCR study of docs/pcr-study.md, reproducible: every regime × configuration as one
# `weightnorm compare` into $OUT/<regime>/<configuration>/, JOBS of them at a time (one CPU
# thread each), then the summary table (scripts/pcr_study.py).
#
#   scripts/pcr_study.sh                  # the study as committed
#   REGIMES="mlp-bce-long-noisy" SEEDS=0,1 scripts/pcr_study.sh   # a part of it
#
# A regime: model, objective, training images, epochs, label noise. Configurations: plain, wn,
# bn (one comparison), plain-wd at each weight decay of WD (four values: as many as the PCR
# configurations, so that the baseline is searched as hard), PCR (covariant transport) at each
# cap of CAPS and each soft weight of SOFTS. Finished comparisons are kept (rerun to resume a
# stopped study: a comparison whose report exists is skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/weightnorm}
OUT=${OUT:-runs/pcr-study}
SEEDS=${SEEDS:-0,1,2,3,4}
JOBS=${JOBS:-2}
WD=${WD:-"1e-2 1e-1 3e-1 1"}
CAPS=${CAPS:-"2 5"}
SOFTS=${SOFTS:-"1e-3 1e-2"}
EVERY=${EVERY:-100}
REGIMES=${REGIMES:-"mlp-bce-long-noisy mlp-ce-long-noisy mlp-bce-long mlp-ce-long mlp-bce-short mlp-ce-short"}

# name -> model loss subset epochs noise
regime() {
    case $1 in
    mlp-bce-long-noisy) echo "mlp bce 10000 60 0.2" ;;
    mlp-ce-long-noisy) echo "mlp ce 10000 60 0.2" ;;
    mlp-bce-long) echo "mlp bce 10000 60 0" ;;
    mlp-ce-long) echo "mlp ce 10000 60 0" ;;
    mlp-bce-short) echo "mlp bce 60000 5 0" ;;
    mlp-ce-short) echo "mlp ce 60000 5 0" ;;
    cnn-bce-long-noisy) echo "cnn bce 10000 30 0.2" ;;
    cnn-ce-long-noisy) echo "cnn ce 10000 30 0.2" ;;
    *) echo "unknown regime $1" >&2 && exit 2 ;;
    esac
}

[ -x "$BIN" ] || cargo build --release
jobs=()
for r in $REGIMES; do
    read -r model loss subset epochs noise <<< "$(regime "$r")"
    common="--dataset fashion-mnist --model $model --loss $loss --train-subset $subset --epochs $epochs --label-noise $noise --seeds $SEEDS --quiet"
    jobs+=("$OUT/$r/base|$common --params plain,wn,bn")
    for w in $WD; do jobs+=("$OUT/$r/plain-wd:$w|$common --params plain-wd --weight-decay $w"); done
    for g in $CAPS; do jobs+=("$OUT/$r/pcr-cap:$g|$common --params pcr --pcr-every $EVERY --pcr-penalty cap:$g"); done
    for l in $SOFTS; do jobs+=("$OUT/$r/pcr-soft:$l|$common --params pcr --pcr-every $EVERY --pcr-penalty soft:$l"); done
done

run() {
    local out=${1%%|*} args=${1#*|}
    [ -f "$out/report.md" ] && return 0
    rm -rf "$out"
    mkdir -p "$(dirname "$out")"
    # shellcheck disable=SC2086
    "$BIN" --threads 1 compare $args --out "$out" > "$out.log" 2>&1 || { echo "FAILED: $out (see $out.log)" >&2; return 1; }
    echo "done: $out"
}
export -f run
export BIN
start=$(date +%s)
printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} bash -c 'run "$@"' _ {}
echo "study: $(( $(date +%s) - start )) s wall"
# One comparison with the best of each family together, for its plots (loss, test NLL, gain):
# the same seeds, so the same runs as above.
if [ -n "${PLOT_REGIME:-mlp-bce-long-noisy}" ]; then
    r=${PLOT_REGIME:-mlp-bce-long-noisy}
    read -r model loss subset epochs noise <<< "$(regime "$r")"
    run "$OUT/plots-$r|--dataset fashion-mnist --model $model --loss $loss --train-subset $subset --epochs $epochs --label-noise $noise --seeds $SEEDS --quiet --params plain,plain-wd,wn,pcr --weight-decay ${PLOT_WD:-1} --pcr-every $EVERY --pcr-penalty ${PLOT_PCR:-cap:2}"
fi
python3 scripts/pcr_study.py "$OUT"
