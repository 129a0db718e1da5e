#!/bin/sh
# What `make bench` needs besides the library's own build: g++ and
# Boost.Context (Debian's libboost-context-dev, the C++ peer), Boost.Asio
# (libboost-dev: header-only, the C++20 coroutines' peer; g++ 10 or later
# for -std=c++20 coroutines), libuv
# (libuv1-dev, the C event-loop peer of the echo benches), valgrind
# (instruction counts), python3 (the runner), gcc. Missing packages are
# installed with apt-get when this runs as root (`apt-get update` once,
# first); otherwise it stops and names them.
set -eu

missing=""
for pc in gcc:gcc g++:g++ valgrind:valgrind python3:python3; do
    pkg=${pc%%:*}
    cmd=${pc#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing="$missing $pkg"
done
# Boost.Context: the header and the library to link.
have_lib=0
for f in /usr/lib/*/libboost_context.so /usr/lib/libboost_context.so /usr/local/lib/libboost_context.so; do
    [ -e "$f" ] && have_lib=1
done
if [ ! -f /usr/include/boost/context/fiber.hpp ] || [ "$have_lib" = 0 ]; then
    missing="$missing libboost-context-dev"
fi

# Boost.Asio's C++20 coroutines (asio::awaitable, Boost 1.70 and later):
# headers only. libboost-context-dev pulls them in on Debian; asked for on
# their own in case Boost.Context came from elsewhere.
if [ ! -f /usr/include/boost/asio/awaitable.hpp ]; then
    missing="$missing libboost-dev"
fi

# libuv: the header and the library to link.
have_uv=0
for f in /usr/lib/*/libuv.so /usr/lib/libuv.so /usr/local/lib/libuv.so; do
    [ -e "$f" ] && have_uv=1
done
if [ ! -f /usr/include/uv.h ] || [ "$have_uv" = 0 ]; then
    missing="$missing libuv1-dev"
fi

[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "make bench: missing:$missing" >&2
    echo "  install them (Debian/Ubuntu: apt-get install$missing) or run 'make bench' as root" >&2
    exit 1
fi

echo "make bench: installing$missing"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq; then
    echo "make bench: apt-get update failed; cannot install$missing" >&2
    exit 1
fi
# shellcheck disable=SC2086
if ! apt-get install -y -qq --no-install-recommends $missing >/dev/null; then
    echo "make bench: apt-get install$missing failed" >&2
    exit 1
fi
