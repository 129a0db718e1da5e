#!/bin/sh
# Prints the package version from Cargo.toml's [package] table, e.g. 0.1.0.
# Usage: scripts/version.sh [full|major|minor|patch]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
v=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$root/Cargo.toml" | head -n 1)
case $v in
[0-9]*.[0-9]*.[0-9]*) ;;
*) echo "scripts/version.sh: no x.y.z version in Cargo.toml's [package] table" >&2; exit 1 ;;
esac
core=${v%%[-+]*}  # drop a pre-release or build suffix
major=${core%%.*}
rest=${core#*.}
minor=${rest%%.*}
patch=${rest#*.}
case ${1:-full} in
full) echo "$v" ;;
major) echo "$major" ;;
minor) echo "$minor" ;;
patch) echo "$patch" ;;
*) echo "usage: scripts/version.sh [full|major|minor|patch]" >&2; exit 2 ;;
esac
