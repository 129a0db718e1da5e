#!/bin/sh
# `make test-docs`: the documentation a new user learns from.
#   1. scripts/apiref.py generates the reference (man pages and HTML) from
#      include/coframe.h into a temporary directory; every function the
#      header declares (found here with sed, not with the generator's
#      parser) must have its page, whose SYNOPSIS is the header's prototype
#      and whose DESCRIPTION is not empty, and its anchor in the HTML.
#   2. The pages must be well-formed roff: mandoc -Tlint and groff -ww
#      print nothing. Every link of the HTML must lead to an anchor.
#   3. Every ```c block of docs/TUTORIAL.md is built and run
#      (scripts/readme-c.sh), and every ```cpp block of docs/CPP.md, with
#      g++ and clang++ (scripts/readme-cpp.sh).
# Set KEEP=1 to keep the temporary directory.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
header=$root/include/coframe.h
testname=test-docs
. "$root/scripts/testdir.sh"

python3 "$root/scripts/apiref.py" --header "$header" --out "$tmp/docs"
man3=$tmp/docs/man/man3
man7=$tmp/docs/man/man7
html=$tmp/docs/html/index.html

# The header's functions: a line that starts a declaration at column 0
# and names coro_*( (typedefs of function pointers name "(*coro_...").
funcs=$(sed -n 's/^[A-Za-z_][A-Za-z0-9_ *]*[ *]\(coro_[a-z0-9_]*\)(.*/\1/p' "$header")
[ -n "$funcs" ] || fail "found no function in $header"

# render PAGE: the page as plain text (no bold, no hyphenation)
render() { groff -man -Tascii -P-cbou -rHY=0 "$1" 2>/dev/null; }

n=0
for f in $funcs; do
    n=$((n + 1))
    page=$man3/$f.3
    [ -f "$page" ] || fail "$f has no man page ($f.3)"
    render "$page" >"$tmp/$f.txt"
    # The DESCRIPTION section must hold some text.
    words=$(awk '/^DESCRIPTION/ { on = 1; next } /^[A-Z]/ { on = 0 } on { n += NF } END { print n + 0 }' "$tmp/$f.txt")
    [ "$words" -gt 0 ] || fail "$f.3 has an empty DESCRIPTION"
    # SYNOPSIS, once spaces are squeezed, is the header's prototype.
    want=$(awk -v f="$f" '
        !on && $0 ~ "^[A-Za-z_].*[ *]" f "\\(" { on = 1 }
        on { printf "%s ", $0 } on && /;/ { exit }' "$header" | tr -s ' \t' '  ' | sed 's/( /(/g; s/ $//')
    got=$(awk '/^SYNOPSIS/ { on = 1; next } /^[A-Z]/ { on = 0 } on' "$tmp/$f.txt" |
        grep -v '#include <coframe.h>' | tr '\n' ' ' | tr -s ' \t' '  ' | sed 's/^ //; s/( /(/g; s/ $//')
    [ "$got" = "$want" ] || fail "$f.3's SYNOPSIS is '$got', the header says '$want'"
    grep -q "id=\"$f\"" "$html" || fail "index.html has no anchor for $f"
    grep -q "^\.BR $f (3)" "$man7/coframe.7" || fail "coframe.7 does not list $f"
done
# No page for a function the header no longer has.
pages=$(ls "$man3" | wc -l)
[ "$pages" -eq "$n" ] || fail "$pages pages in man3 for $n functions"
echo "test-docs: $n functions, each with its page, synopsis, description and anchor"

lint=$tmp/lint.txt
for page in "$man3"/*.3 "$man7"/coframe.7; do
    groff -man -Tutf8 -ww -z "$page" 2>&1 | sed "s|^|$(basename "$page"): |" >>"$lint"
done
if command -v mandoc >/dev/null 2>&1; then
    mandoc -Tlint -W warning "$man3"/*.3 "$man7"/coframe.7 >>"$lint" 2>&1 || true
    linted="groff -ww and mandoc -Tlint"
else
    linted="groff -ww (mandoc is not installed: scripts/deps.sh installs it)"
fi
if [ -s "$lint" ]; then
    cat "$lint" >&2
    fail "the man pages have the roff problems above"
fi
echo "test-docs: $linted find nothing to say about the $((n + 1)) pages"

# Every href="#x" of the HTML must name an id, and no id may repeat.
python3 - "$html" <<'PY' || fail "index.html has broken links"
import html.parser, sys
ids, refs = [], []
class P(html.parser.HTMLParser):
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a: ids.append(a["id"])
        if a.get("href", "").startswith("#"): refs.append(a["href"][1:])
P().feed(open(sys.argv[1], encoding="utf-8").read())
dup = sorted({i for i in ids if ids.count(i) > 1})
bad = sorted(set(refs) - set(ids))
for i in dup: print("index.html: id %s repeats" % i, file=sys.stderr)
for r in bad: print("index.html: link to #%s, which is no anchor" % r, file=sys.stderr)
print("test-docs: index.html: %d anchors, %d links, all resolve" % (len(ids), len(refs)))
sys.exit(1 if dup or bad else 0)
PY

lib=$root/target/release
[ -f "$lib/libcoframe.so" ] || fail "$lib/libcoframe.so is missing: run 'make build' first"
major=$(sh "$root/scripts/version.sh" major)
[ -e "$lib/libcoframe.so.$major" ] || ln -sf libcoframe.so "$lib/libcoframe.so.$major"
CC=${CC:-cc} sh "$root/scripts/readme-c.sh" "$root/docs/TUTORIAL.md" "$tmp/tutorial" "$lib" "$root/include"
for cxx in "${CXX:-g++}" "${CLANGXX:-clang++}"; do
    CXX=$cxx sh "$root/scripts/readme-cpp.sh" "$root/docs/CPP.md" "$tmp/cpp-$cxx" "$lib" "$root/include"
done
