#!/bin/sh
# `make deb`: builds the Debian packages libcoframe0, libcoframe-dev (and
# libcoframe0-dbgsym, the library's debug info) from debian/ with
# dpkg-buildpackage and debhelper, into target/deb/ (or $DEB_DIR) instead
# of the repository's parent directory, and prints where they are.
# debian/rules builds and installs with `make build` and `make install`,
# reusing target/release. docs/BUILD.md, "Debian packages".
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
out=${DEB_DIR:-$root/target/deb}

fail() { echo "deb: $*" >&2; exit 1; }

for cmd in dpkg-buildpackage dh; do
    command -v "$cmd" >/dev/null 2>&1 ||
        fail "$cmd is missing: scripts/deps.sh installs dpkg-dev and debhelper (as root)"
done

# debian/changelog names the package's version: it must be Cargo.toml's
# (a pre-release 1.0.0-rc1 is 1.0.0~rc1 there, which sorts before 1.0.0).
version=$(cd "$root" && dpkg-parsechangelog -S Version)
cargo_version=$(sh "$root/scripts/version.sh" full | sed 's/-/~/')
[ "$version" = "$cargo_version" ] ||
    fail "debian/changelog says $version, Cargo.toml $cargo_version: add a debian/changelog entry for $cargo_version"
arch=$(dpkg --print-architecture)

mkdir -p "$out"
(cd "$out" && rm -f ./*.deb ./*.ddeb ./*.changes ./*.buildinfo)

# -b: binary packages only. -d: Build-Depends names Debian's cargo and
# rustc, but here they come from rustup (Debian 12's rustc is older than
# Cargo.toml's rust-version). COFRAME_DEB_DIR is dh_builddeb's --destdir
# (debian/rules); dpkg-genbuildinfo and dpkg-genchanges look there (-u).
echo "deb: dpkg-buildpackage -b -us -uc -d (coframe $version, $arch)"
(cd "$root" && COFRAME_DEB_DIR=$out dpkg-buildpackage -b -us -uc -d \
    --buildinfo-option=-u"$out" --changes-option=-u"$out" \
    --buildinfo-file="$out/coframe_${version}_$arch.buildinfo" \
    --changes-file="$out/coframe_${version}_$arch.changes")

echo "deb: the packages are in $out:"
for f in "$out"/*.deb "$out"/*.ddeb "$out"/*.changes; do
    [ -e "$f" ] && echo "  $f"
done
exit 0
