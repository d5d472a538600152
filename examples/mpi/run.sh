#!/usr/bin/env bash
# Builds split_loss against the build tree's liblosskit with mpicc and checks
# that `mpirun -np 2` (and -np 3) gives the value and gradient of a
# single-process run, to 1e-12 relative, for dice (binary and multiclass),
# a weighted terms config, mse, and two losses whose statistics are kept
# per sample (generalized_dice, MONAI's DiceCE), which go through partials;
# and gather_loss likewise for whole-batch losses, gathered along their
# declared batch dims (ntxent's two views, supcon, lovasz_softmax).
# usage: examples/mpi/run.sh [BUILD_DIR]
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mpicc -std=c11 -O2 -Wall -Wextra -Werror -I"$src/host/include" -I"$src/sdk/include" \
  "$src/examples/mpi/split_loss.c" -L"$build/host" -llosskit -Wl,-rpath,"$build/host" \
  -o "$work/split_loss"
mpicc -std=c11 -O2 -Wall -Wextra -Werror -I"$src/host/include" -I"$src/sdk/include" \
  "$src/examples/mpi/gather_loss.c" -L"$build/host" -llosskit -Wl,-rpath,"$build/host" \
  -o "$work/gather_loss"
mpirun_np() { mpirun --oversubscribe --allow-run-as-root -np "$@" </dev/null; }
export OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo LOSSKIT_THREADS=1
status=0
while read -r prog cfg kind; do
  one=$("$work/$prog" "$src/$cfg" "$work/one.npy" "$kind" </dev/null)
  for np in 2 3; do
    many=$(mpirun_np "$np" "$work/$prog" "$src/$cfg" "$work/many.npy" "$kind")
    if /usr/bin/python3 - "$one" "$many" "$work/one.npy" "$work/many.npy" <<'PY'
import sys, numpy as np
v1, v2 = (float(s.rsplit(":", 1)[1]) for s in sys.argv[1:3])
g1, g2 = np.load(sys.argv[3]), np.load(sys.argv[4])
err = np.abs(g1 - g2).max() / np.abs(g1).max()
ok = abs(v1 - v2) <= 1e-12 * abs(v1) and err <= 1e-12
print("%s | %s | gradient max rel error %.2g: %s" % (sys.argv[1], sys.argv[2], err,
                                                      "ok" if ok else "MISMATCH"))
sys.exit(0 if ok else 1)
PY
    then :; else status=1; fi
  done
done <<'LIST'
split_loss configs/dice.json binary
split_loss configs/dice_multiclass.json classes
split_loss configs/dice_bce_terms.json binary
split_loss configs/mse.json binary
split_loss configs/generalized_dice.json binary
split_loss configs/monai_dice_ce.json classes
gather_loss configs/ntxent.json rows
gather_loss configs/supcon.json rows
gather_loss configs/lovasz_softmax.json pixels
LIST
exit $status
