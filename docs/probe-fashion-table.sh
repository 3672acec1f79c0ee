#!/usr/bin/env bash
# The Fashion-MNIST table of the README's "Representations" section: five encoders trained for the same 600 s of
# one CPU thread each (10 CPU-minutes; two trainings at a time on a 2-core machine), then probed by `genlab probe`
# (linear, MLP and kNN probes of the code, with the raw-pixel, PCA and random-weights baselines), and the first DIM's
# inner layers (`--layer local`, `--layer hidden`), which DIM's paper probes too.
# Run from the repository root: bash docs/probe-fashion-table.sh   (GENLAB_DATA must hold fashion-mnist/ or it is
# searched/downloaded as usual). Prints each training's CPU time (user + system, from /usr/bin/time); the tables
# are printed by `genlab probe` and kept in each run's eval.json (probe/...) and report.html.
set -euo pipefail
GENLAB=${GENLAB:-.venv/bin/genlab}
OUT=${OUT:-runs}
BUDGET=${BUDGET:-600}  # seconds of training per encoder (train.time_limit), one thread each
COMMON=(--data fashion-mnist --latent-dim 64 --epochs 100000 --train.time_limit="$BUDGET" --train.threads=1
        --no-progress --no-figures)
train() {  # name, then the family and its options
  local name=$1; shift
  /usr/bin/time -f "$name: %U s user + %S s system CPU, %e s wall" "$GENLAB" train "$@" --out "$OUT/fmp-$name" \
    "${COMMON[@]}" > /dev/null
}
train dim-jsd dim & train dim-infonce dim --model.estimator=infonce & wait
train dim-dv dim --model.estimator=dv & train vae vae --model.arch=conv & wait
train bigan-qp bigan-qp --preset quick &
# the inner layers of the first DIM (one probe process per core; each writes only its own keys of eval.json)
OMP_NUM_THREADS=1 "$GENLAB" probe "$OUT/fmp-dim-jsd" --layer local --no-progress --no-report
OMP_NUM_THREADS=1 "$GENLAB" probe "$OUT/fmp-dim-jsd" --layer hidden --no-progress --no-report
wait
# the codes, with the baselines: the DIMs in one process, the VAE and BiGAN-QP in another
OMP_NUM_THREADS=1 "$GENLAB" probe "$OUT"/fmp-dim-{jsd,infonce,dv} --no-progress > "$OUT/fmp-probe-dim.txt" &
OMP_NUM_THREADS=1 "$GENLAB" probe "$OUT"/fmp-{vae,bigan-qp} --no-progress > "$OUT/fmp-probe-others.txt" &
wait
cat "$OUT/fmp-probe-dim.txt" "$OUT/fmp-probe-others.txt"
