#!/usr/bin/env bash
# End to end, as a plugin author would: install losskit to a temporary
# prefix, scaffold a plugin with `losskit new`, build it out of tree through
# pkg-config alone, check it with `losskit check`, and run it from a config.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

meson setup "$work/build" "$src" --prefix="$prefix" -Dtests=disabled >/dev/null
meson compile -C "$work/build" >/dev/null
meson install -C "$work/build" >/dev/null
export PATH=$prefix/bin:$PATH
export PKG_CONFIG_PATH=$(dirname "$(find "$prefix" -name losskit-sdk.pc)")

cd "$work"
losskit new my_tversky
cd my_tversky
meson setup build >/dev/null
meson compile -C build >/dev/null
losskit check build/my_tversky.so
value=$(LOSSKIT_PLUGIN_PATH=$PWD/build losskit run my_tversky.json \
          --input data/input.npy --target data/target.npy)
echo "my_tversky on its sample data: $value"
# The installed runtime also serves its own built-in plugins.
losskit list | grep -q '^focal ' || { echo "e2e: the installed losskit does not list focal" >&2; exit 1; }
echo "e2e sdk: 1 passed, 0 failed"
