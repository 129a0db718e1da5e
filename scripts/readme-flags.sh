# Sourced by readme-c.sh and readme-cpp.sh (`. readme-flags.sh`, so `set --`
# below replaces their arguments): from MARKDOWN BUILD_DIR LIBDIR INCDIR, or
# MARKDOWN BUILD_DIR pkg-config, sets $md and $out and leaves in "$@" the
# flags that compile and link a block against coframe: the build tree's
# (and LD_LIBRARY_PATH to run it), or the installed coframe.pc's
# (scripts/test-deb.sh).
md=$1 out=$2
if [ "$3" = pkg-config ]; then
    flags=$(pkg-config --cflags --libs coframe)
    # shellcheck disable=SC2086  # pkg-config's flags are meant to be split
    set -- $flags
else
    LD_LIBRARY_PATH=$3
    export LD_LIBRARY_PATH
    set -- -I"$4" -L"$3" -lcoframe
fi
