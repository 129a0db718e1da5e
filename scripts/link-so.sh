#!/bin/sh
# Links DIR/libcoframe.so from DIR/libcoframe.a with src/ffi/coframe.map as
# the version script, and makes the DIR/libcoframe.so.MAJOR link (called by
# `make build`, `build-tsan`, `build-asan` and scripts/ports.sh).
#
# Why not cargo's cdylib: rustc hands the linker its own anonymous version
# script (`{ global: coro_...; local: *; }`), GNU ld refuses a second one
# with version tags ("anonymous version tag cannot be combined with other
# version tags"), and lld takes both but lets the anonymous one win, so
# nothing gets a version. The archive holds the same objects; the flags
# below are those rustc gives the linker for a cdylib (docs/BUILD.md).
#
# Usage: scripts/link-so.sh DIR [RUST_TARGET]
# Environment: CC (cc; the target's gcc when cross-linking), MAP (the
# version script, default src/ffi/coframe.map).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:?usage: scripts/link-so.sh DIR [RUST_TARGET]}
target=${2:-}
CC=${CC:-cc}
MAP=${MAP:-$root/src/ffi/coframe.map}
major=$(sh "$root/scripts/version.sh" major)

os=${target:-$(rustc -vV | sed -n 's/^host: //p')}
case $os in
*-linux-* | *-freebsd*) ;;
*)
    echo "link-so: $os is not an ELF target this script links for; build the" \
        "shared library there with cargo cinstall (cargo-c)" >&2
    exit 1
    ;;
esac
[ -f "$dir/libcoframe.a" ] || { echo "link-so: $dir/libcoframe.a is missing: build it first" >&2; exit 1; }

# -u NAME for each name in the map: the archive's members are taken as a C
# program linking libcoframe.a takes them, starting from the exports.
undef=$(sed -n 's/^ *\([A-Za-z_][A-Za-z0-9_]*\);$/-Wl,-u,\1/p' "$MAP")
# shellcheck disable=SC2046,SC2086  # the lists are meant to be split
"$CC" -shared -o "$dir/libcoframe.so.tmp" $undef "$dir/libcoframe.a" \
    -Wl,--version-script="$MAP" -Wl,--no-undefined-version \
    -Wl,-soname,"libcoframe.so.$major" -Wl,-z,nodelete \
    -Wl,--as-needed $(sh "$root/scripts/native-libs.sh" $target) \
    -Wl,--eh-frame-hdr -Wl,-z,noexecstack -Wl,--gc-sections -Wl,-z,relro,-z,now -Wl,-O1
mv "$dir/libcoframe.so.tmp" "$dir/libcoframe.so"
ln -sf libcoframe.so "$dir/libcoframe.so.$major"
