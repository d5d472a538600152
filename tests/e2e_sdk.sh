#!/usr/bin/env bash
# End to end, as a plugin author would: install losskit to a temporary
# prefix, scaffold a plugin from each template with `losskit new` (the
# two-pass my_tversky, and my_huber with --elementwise), build each out of
# tree through pkg-config alone (with -Werror: a scaffold must compile
# warning-free), check it with `losskit check` and run it from its config.
# For my_huber also: the SIMD variants were built and are the ones the CPU
# gets, and a bench against the memory roofline (printed, not asserted).
#
#   bash tests/e2e_sdk.sh          builds and installs losskit in a temporary
#                                  prefix first
#   bash tests/e2e_sdk.sh BUILD    installs the build directory BUILD, already
#                                  compiled, to the prefix it was set up with,
#                                  which must lie inside BUILD (.ci/run passes
#                                  its release build, set up with
#                                  --prefix=$PWD/build-release/prefix, and
#                                  saves a build)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ $# -ge 1 ]]; then
    bdir=$(cd "$1" && pwd)
    prefix=$(meson introspect "$bdir" --buildoptions | python3 -c \
        'import json, sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"))')
    if [[ $prefix != "$bdir"/* ]]; then
        echo "e2e_sdk.sh: $1: its prefix $prefix is not inside the build directory; set it up with --prefix=$bdir/prefix (the test installs there)" >&2
        exit 2
    fi
    meson install -C "$bdir" >/dev/null
else
    prefix=$work/prefix
    meson setup "$work/build" "$src" --prefix="$prefix" -Dtests=disabled >/dev/null
    meson compile -C "$work/build" >/dev/null
    meson install -C "$work/build" >/dev/null
fi
export PATH=$prefix/bin:$PATH
PKG_CONFIG_PATH=$(dirname "$(find "$prefix" -name losskit-sdk.pc)")
export PKG_CONFIG_PATH
unset LOSSKIT_SIMD LOSSKIT_PLUGIN_PATH LOSSKIT_DEBUG

passed=0 failed=0
# step NAME CMD...: runs CMD, counts it, and keeps going after a failure so
# that the summary names every broken step.
step() {
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "e2e: FAIL $name" >&2
    fi
}

build() { # the project in ., out of tree, pkg-config alone
    meson setup build -Dwerror=true >setup.log 2>&1 || { cat setup.log >&2; return 1; }
    meson compile -C build >compile.log 2>&1 || { cat compile.log >&2; return 1; }
}

run_sample() { # NAME: its config on the sample data
    local value
    value=$(LOSSKIT_PLUGIN_PATH=$PWD/build losskit run "$1.json" \
              --input data/input.npy --target data/target.npy) || return 1
    echo "$1 on its sample data: $value"
}

# The kernels the layer must pick on this CPU, the template having built
# the AVX2 and AVX-512 variants on x86-64: the widest instruction set the
# CPU runs, at most $1 (avx512 or avx2, as LOSSKIT_SIMD caps it).
expected_kernels() {
    local flags isa=portable
    flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
    has() { for f in "$@"; do [[ $flags == *" $f "* ]] || return 1; done; }
    if [[ $(uname -m) == x86_64 ]] && has avx2 fma; then
        isa=avx2
        if [[ $1 == avx512 ]] && has avx512f avx512dq avx512bw avx512vl; then
            isa=avx512
        fi
    fi
    echo "$isa f32 and $isa f64"
}

kernels() { # NAME: LOSSKIT_DEBUG's line names the kernels expected here
    local cap want log
    for cap in avx512 avx2; do
        want="$1: $(expected_kernels $cap) kernels"
        log=$(LOSSKIT_SIMD=$cap LOSSKIT_DEBUG=1 LOSSKIT_PLUGIN_PATH=$PWD/build \
                losskit run "$1.json" --input data/input.npy --target data/target.npy \
                2>&1 >/dev/null) || return 1
        if ! grep -qF "$want" <<<"$log"; then
            echo "e2e: LOSSKIT_SIMD=$cap: want '$want'; the run logged:" >&2
            echo "$log" >&2
            return 1
        fi
        echo "LOSSKIT_SIMD=$cap: $want"
    done
}

bench() { # NAME: timing is informational; only the report's shape is checked
    local out
    out=$(LOSSKIT_PLUGIN_PATH=$PWD/build losskit bench "$1.json" \
            --shape 16,1,1024,1024 --threads 2 --repeat 5) || return 1
    echo "$out" | sed 's/^/  /'
    grep -qE '^ +forward\+backward +.*[0-9]+%$' <<<"$out"
}

cd "$work"
step "new my_tversky" losskit new my_tversky >/dev/null
step "new my_huber --elementwise" losskit new my_huber --elementwise >/dev/null

cd "$work/my_tversky"
step "build my_tversky" build
step "check my_tversky" losskit check build/my_tversky.so --pairs
step "run my_tversky" run_sample my_tversky

cd "$work/my_huber"
step "build my_huber" build
step "check my_huber" losskit check build/my_huber.so --pairs
step "run my_huber" run_sample my_huber
step "kernels of my_huber" kernels my_huber
step "bench my_huber" bench my_huber

# A deliberately broken new loss (the Huber scaffold with its gradient's
# sign flipped) is caught by the registry-driven check with nothing edited
# but the plugin path: `losskit check --all` fails and names the check.
broken_is_caught() {
    local out rc=0
    out=$(LOSSKIT_PLUGIN_PATH=$PWD/build losskit check --all 2>&1) || rc=$?
    if [[ $rc -ne 1 ]] || ! grep -q '^FAIL grad my_broken ' <<<"$out" ||
        ! grep -q '^== .*my_broken.so$' <<<"$out"; then
        echo "e2e: check --all exit $rc, wanted 1 with 'FAIL grad my_broken':" >&2
        grep -E '^(== |FAIL|[0-9]+ )' <<<"$out" >&2
        return 1
    fi
    grep -E '^(== .*my_broken|FAIL|[0-9]+ plugins)' <<<"$out"
}
flip_sign() { # the scaffold's gradient, negated
    sed -i 's/^    e->grad = lk_select(quadratic, d, lk_mul(delta, lk_sign(d)));/    e->grad = lk_neg(lk_select(quadratic, d, lk_mul(delta, lk_sign(d))));/' my_broken.c
    grep -q 'lk_neg(lk_select(quadratic' my_broken.c
}
cd "$work"
step "new my_broken --elementwise" losskit new my_broken --elementwise >/dev/null
cd "$work/my_broken"
step "flip my_broken's gradient" flip_sign
step "build my_broken" build
step "check --all catches my_broken" broken_is_caught

# Against the build tree, not installed: its uninstalled pkg-config files
# must give the SDK's headers (the checkout's sdk/include) and plugindir.
build_uninstalled() {
    local pc=$bdir/meson-uninstalled dir
    [[ -d $pc ]] || { echo "no $pc" >&2; return 1; }
    PKG_CONFIG_PATH=$pc build || return 1
    dir=$(PKG_CONFIG_PATH=$pc pkg-config --variable=plugindir losskit-sdk)
    [[ $dir == "$bdir/plugins" ]] || { echo "plugindir $dir, not $bdir/plugins" >&2; return 1; }
    losskit check build/my_unin.so >check.log 2>&1 || { cat check.log >&2; return 1; }
}
if [[ $# -ge 1 ]]; then
    cd "$work"
    step "new my_unin --elementwise" losskit new my_unin --elementwise >/dev/null
    cd "$work/my_unin"
    step "build my_unin against the uninstalled build tree" build_uninstalled
fi

# The installed runtime also serves its own built-in plugins. (grep reads
# the whole list: grep -q could stop early and fail losskit with SIGPIPE.)
lists_focal() { losskit list | grep '^focal ' >/dev/null; }
step "list focal" lists_focal

echo "e2e sdk: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
