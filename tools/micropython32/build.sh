#!/usr/bin/env bash
# Build MicroPython's unix port as a 32-bit (i386) program, for simulated boards whose heap
# figures are those of a 32-bit board (the ESP32, the RP2040): the venv's interpreter is a
# 64-bit program, whose pointers (and so objects, dicts, frames) are twice a board's.
#
#   tools/micropython32/build.sh MICROPYTHON_SOURCE_DIR [OUT_DIR]
#   EDGEFLEET_MICROPYTHON=OUT_DIR/micropython python tools/bench/mcu_heap.py
#
# MICROPYTHON_SOURCE_DIR: a MicroPython source tree of the venv's interpreter's version (1.29).
# Of its git submodules two are used for a node's TLS link, lib/mbedtls (`tls`) and
# lib/micropython-lib (`ssl`, over it); without them the build has no TLS, and simulated boards
# on it can only take plaintext links. Needs a C compiler that builds 32-bit programs (Debian:
# apt-get install gcc-multilib pkg-config). Frozen in, as a board's firmware has them: asyncio,
# and ssl. Left out, as nothing an MCU node uses and needing other submodules or 32-bit
# libraries: ffi, btree, micropython-lib's other packages.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -f "$1/ports/unix/Makefile" ]; then
    echo "usage: $0 MICROPYTHON_SOURCE_DIR [OUT_DIR] (a tree with ports/unix/Makefile)" >&2
    exit 2
fi
src=$(cd "$1" && pwd)
out=${2:-build-micropython32}
mkdir -p "$out"
out=$(cd "$out" && pwd)
jobs=$(nproc)

if ! echo 'int main(void){return 0;}' | gcc -m32 -x c - -o "$out/.m32-check" 2>/dev/null; then
    echo "$0: gcc cannot build 32-bit programs here: apt-get install gcc-multilib pkg-config" >&2
    exit 1
fi
rm -f "$out/.m32-check"

printf 'include("$(MPY_DIR)/extmod/asyncio")\n' > "$out/manifest.py"
lib="$src/lib/micropython-lib"
tls=()
if [ -d "$src/lib/mbedtls/library" ] && [ -f "$lib/python-stdlib/ssl/ssl.py" ]; then
    printf 'require("ssl")\n' >> "$out/manifest.py"
else
    echo "$0: building without TLS: $src lacks lib/mbedtls or lib/micropython-lib" \
         "(git submodule update --init lib/mbedtls lib/micropython-lib)" >&2
    tls=(MICROPY_PY_SSL=0 MICROPY_SSL_MBEDTLS=0)
    # The build checks that micropython-lib is there even when nothing of it is frozen.
    lib="$out/no-micropython-lib"
    mkdir -p "$lib"
    touch "$lib/README.md"
fi

make -C "$src/mpy-cross" -j"$jobs"
make -C "$src/ports/unix" -j"$jobs" VARIANT=standard BUILD="$out/build" CC="gcc -m32" \
    MICROPY_PY_FFI=0 MICROPY_PY_BTREE=0 MICROPY_STANDALONE=0 "${tls[@]}" \
    FROZEN_MANIFEST="$out/manifest.py" MPY_LIB_DIR="$lib"
cp "$out/build/micropython" "$out/micropython"

"$out/micropython" -c "import sys; assert sys.maxsize == 2**31 - 1, sys.maxsize; import asyncio, vfs; vfs.VfsRom"
echo "built $out/micropython: EDGEFLEET_MICROPYTHON=$out/micropython"
