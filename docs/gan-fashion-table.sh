#!/usr/bin/env bash
# The Fashion-MNIST table of the README's GAN section: a VAE, WGAN-GP, SN-GAN, GAN-QP and BiGAN-QP trained for about
# the same CPU time (~270 s each at one thread; epochs set from each family's measured cost per epoch), then
# evaluated (FID / precision / recall in genlab's domain feature space, 5,000 samples) and compared.
# Run from the repository root: bash docs/gan-fashion-table.sh   (GENLAB_DATA must hold fashion-mnist/ or it is
# searched/downloaded as usual). Prints each training's CPU time (user + system, from /usr/bin/time).
set -euo pipefail
GENLAB=${GENLAB:-.venv/bin/genlab}
OUT=${OUT:-runs}
COMMON=(--data fashion-mnist --train.threads=1 --no-progress --no-figures)
train() {  # name, then the family and its options
  local name=$1; shift
  /usr/bin/time -f "$name: %U s user + %S s system CPU, %e s wall" "$GENLAB" train "$@" --out "$OUT/fm-$name" "${COMMON[@]}"
}
train vae      vae      --preset mlp-784-400-20 --epochs 62
train wgan-gp  wgan-gp  --preset mlp-wide       --epochs 24
train sn-gan   gan      --preset sn-gan         --epochs 25
train gan-qp   gan-qp   --preset mlp-wide       --epochs 35
train bigan-qp bigan-qp --preset mlp-wide       --epochs 18
for name in vae wgan-gp sn-gan gan-qp bigan-qp; do
  "$GENLAB" eval "$OUT/fm-$name" -k 250 -n 5000  --no-progress > /dev/null
  "$GENLAB" plot "$OUT/fm-$name" > /dev/null
done
"$GENLAB" compare "$OUT"/fm-{vae,wgan-gp,sn-gan,gan-qp,bigan-qp} --out "$OUT/fm-compare.html" --no-progress
