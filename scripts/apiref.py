#!/usr/bin/env python3
"""The API reference, generated from include/coframe.h's comments (`make docs`).

Reads the cbindgen-generated header: the `/** ... */` comment before each
declaration (functions, `#define` constants, structs, typedefs) and the
file's opening `/* ... */` comment. Writes

    OUT/man/man3/<function>.3   one page per public function: NAME, LIBRARY,
                                SYNOPSIS (the prototype as the header spells
                                it), DESCRIPTION, SAFETY, RETURN VALUE,
                                ERRORS, SEE ALSO
    OUT/man/man7/coframe.7      the overview: every function, type and constant
    OUT/html/index.html         the same in one page, an anchor per name

Comment conventions (src/ffi's doc comments): paragraphs split by blank
lines; a `# Safety` paragraph starts the caller's obligations; a paragraph
starting `Errors:` lists codes, `CORO_EX` or `CORO_EX (when)`, separated by
commas or semicolons. Backquoted names become bold in man pages (italic for
the function's own parameters) and links in the HTML.

No dependency but python3. The output depends only on the header, the
version in Cargo.toml and the date (SOURCE_DATE_EPOCH, else the header's
last commit, else its mtime), so two runs give the same files.

Usage: apiref.py [--header include/coframe.h] [--out target/docs]
"""

import argparse
import datetime
import html
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Overview groups, by name; a function no pattern matches goes under "Other".
GROUPS = [
    ("Runtime", r"coro_runtime_"),
    ("Coroutines", r"coro_(spawn|await|detach|cancel_async|yield|self_id)$"),
    ("Suspension and resumption", r"coro_(suspend|resume|cancel_suspend)$"),
    ("Cleanup", r"coro_(defer|errdefer)$"),
    ("Time and I/O", r"coro_(now|sleep_until|wait_fd|fd_forget|read|write|recv|send|accept|connect)$"),
    ("Mutexes", r"coro_mutex_"),
    ("Condition variables", r"coro_cond_"),
    ("Channels", r"coro_chan_"),
    ("Foreign frames", r"coro_(spawn_frame|frame_)"),
    ("Lock notes (CP.52)", r"coro_lock_note_"),
    ("Diagnostics", r"coro_(dump|live_frames|strerror)$"),
]


class Decl:
    def __init__(self, kind, name, doc, text):
        self.kind = kind  # function, define, opaque, struct, typedef
        self.name = name
        self.doc = doc  # comment text, one string, "\n"-separated lines
        self.text = text  # the declaration as written
        self.fields = []  # struct: Decl("field", ...)
        self.also = []  # define: later defines without a comment of their own
        self.value = ""


def comment_text(lines):
    out = []
    for line in lines:
        line = line.strip()
        line = re.sub(r"^/\*\*?", "", line)
        line = re.sub(r"\*/$", "", line)
        line = re.sub(r"^\* ?", "", line.strip())
        out.append(line.rstrip())
    while out and not out[0]:
        out.pop(0)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def parse(path):
    """Returns (file comment, [Decl]) in header order."""
    lines = open(path, encoding="utf-8").read().split("\n")
    decls, doc, intro, i = [], None, "", 0

    def take_comment(i):
        block = []
        while True:
            block.append(lines[i])
            if "*/" in lines[i]:
                return block, i + 1
            i += 1

    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if s.startswith("/**"):
            block, i = take_comment(i)
            doc = comment_text(block)
            continue
        if s.startswith("/*"):
            block, i = take_comment(i)
            if not intro and not decls:
                intro = comment_text(block)
            continue
        i += 1
        if not s or s.startswith(("//", "}", 'extern "C"')):
            continue
        m = re.match(r"#define\s+(\w+)\s+(.+)$", s)
        if m:
            if doc is None and decls and decls[-1].kind == "define":
                decls[-1].also.append((m.group(1), m.group(2)))
            else:
                d = Decl("define", m.group(1), doc or "", s)
                d.value = m.group(2)
                decls.append(d)
            doc = None
            continue
        if s.startswith("#"):
            continue
        m = re.match(r"typedef struct (\w+) (\w+);$", s)
        if m:
            decls.append(Decl("opaque", m.group(2), doc or "", s))
            doc = None
            continue
        m = re.match(r"typedef struct (\w+) \{$", s)
        if m:
            d = Decl("struct", m.group(1), doc or "", s)
            body, fdoc = [line], None
            while not lines[i].strip().startswith("}"):
                f = lines[i].strip()
                if f.startswith("/**"):
                    block, i = take_comment(i)
                    fdoc = comment_text(block)
                    continue
                body.append(lines[i])
                fm = re.match(r"(.+?)\b(\w+);$", f)
                if fm:
                    d.fields.append(Decl("field", fm.group(2), fdoc or "", f))
                    fdoc = None
                i += 1
            body.append(lines[i])
            d.text = "\n".join(body)
            i += 1
            decls.append(d)
            doc = None
            continue
        # a typedef or a prototype, possibly over several lines
        text = [line]
        while not text[-1].rstrip().endswith(";"):
            text.append(lines[i])
            i += 1
        joined = " ".join(t.strip() for t in text)
        if joined.startswith("typedef"):
            m = re.search(r"\(\*\s*(\w+)\)", joined) or re.search(r"(\w+);$", joined)
            decls.append(Decl("typedef", m.group(1), doc or "", "\n".join(text)))
        else:
            m = re.search(r"(\w+)\(", joined)
            if not m:
                sys.exit("apiref: cannot parse declaration: %s" % joined)
            decls.append(Decl("function", m.group(1), doc or "", "\n".join(text)))
        doc = None
    return intro, decls


def params(proto):
    """The parameter names of a prototype."""
    inner = proto[proto.index("(") + 1 : proto.rindex(")")]
    names, depth, cur = [], 0, ""
    for ch in inner + ",":
        if ch == "," and depth == 0:
            m = re.search(r"\(\*\s*(\w+)\)", cur) or re.search(r"(\w+)\s*(\[\w*\])?\s*$", cur)
            if m and cur.strip() != "void":
                names.append(m.group(1))
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    return names


def split_top(text, seps):
    """Splits text at the characters of seps outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in seps and depth == 0:
            parts.append(cur.strip())
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    parts.append(cur.strip())
    return [p for p in parts if p]


def sections(doc):
    """Splits a comment into description paragraphs, safety paragraphs and
    the errors text (without its "Errors:")."""
    desc, safety, errors, cur = [], [], "", "desc"
    for para in re.split(r"\n\s*\n", doc):
        para = " ".join(para.split())
        if not para:
            continue
        if para.startswith("# Safety"):
            cur = "safety"
            para = para[len("# Safety") :].strip()
            if not para:
                continue
        if para.startswith("Errors:"):
            errors = para[len("Errors:") :].strip()
            cur = "after"
            continue
        (safety if cur == "safety" else desc).append(para)
    return desc, safety, errors


def lower_first(s):
    """s with a lower-case first letter, unless its first word is a name (NULL, CORO_EIO)."""
    return s[0].lower() + s[1:] if len(s) > 1 and s[0].isupper() and s[1].islower() else s


def first_sentence(text):
    """The opening sentence of a paragraph, cut at a ':' or ';' when long."""
    depth, end = 0, len(text)
    for k, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "." and depth == 0 and (k + 1 == len(text) or text[k + 1] == " "):
            if not re.search(r"\b(e\.g|i\.e)$", text[:k]):
                end = k
                break
    s = text[:end]
    if len(s) > 70:
        depth = 0
        for k, ch in enumerate(s):
            depth += ch == "("
            depth -= ch == ")"
            if ch in ":;" and depth == 0:
                s = s[:k]
                break
    return lower_first(s.strip())


def errors_list(errors):
    """[(code or None, text)] from the errors text."""
    out = []
    for item in split_top(errors.rstrip("."), ",;"):
        m = re.match(r"`(CORO_\w+)`\s*(.*)$", item)
        if m:
            why = m.group(2)
            if why.startswith("(") and why.endswith(")"):
                why = why[1:-1]
            out.append((m.group(1), why))
        else:
            out.append((None, item))
    return out


def sentence(text, capital=False):
    """text with a full stop (and a capital letter)."""
    text = " ".join(text.split())
    if capital:
        text = text[:1].upper() + text[1:]
    return text + ("" if text.endswith(".") else ".")


class Doc:
    """What both writers need: the declarations, by name and kind."""

    def __init__(self, header):
        self.intro, self.decls = parse(header)
        self.funcs = [d for d in self.decls if d.kind == "function"]
        self.types = [d for d in self.decls if d.kind in ("opaque", "struct", "typedef")]
        self.consts = [d for d in self.decls if d.kind == "define" and d.name != "COFRAME_H"]
        self.known = {d.name: d for d in self.decls}
        for d in self.consts:
            for name, _ in d.also:
                self.known[name] = d
        self.codes = {d.name: d for d in self.consts if re.match(r"CORO_E|CORO_OK$|CORO_PENDING$", d.name)}

    def groups(self):
        out = [(title, []) for title, _ in GROUPS] + [("Other", [])]
        for f in self.funcs:
            for k, (_, pat) in enumerate(GROUPS):
                if re.match(pat, f.name):
                    out[k][1].append(f)
                    break
            else:
                out[-1][1].append(f)
        return [(t, fs) for t, fs in out if fs]

    def see_also(self, f):
        """Functions named in f's comment, then those of its group."""
        names = []
        for name in re.findall(r"`(\w+)(?:\(\))?`", f.doc):
            d = self.known.get(name)
            if d and d.kind == "function" and name != f.name and name not in names:
                names.append(name)
        for _, fs in self.groups():
            if f in fs:
                names += [g.name for g in fs if g.name != f.name and g.name not in names]
        return names


def date_of(header):
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        try:
            epoch = subprocess.run(
                ["git", "-C", ROOT, "log", "-1", "--format=%ct", "--", os.path.relpath(header, ROOT)],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            epoch = ""
    if not epoch:
        epoch = os.path.getmtime(header)
    return datetime.datetime.fromtimestamp(int(float(epoch)), datetime.timezone.utc).strftime("%Y-%m-%d")


def version():
    text = open(os.path.join(ROOT, "Cargo.toml"), encoding="utf-8").read()
    m = re.search(r'^\[package\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.M | re.S)
    return m.group(1) if m else "unknown"


# ---------------------------------------------------------------- man pages


def roff_escape(text):
    text = text.replace("\\", "\\e")
    # a minus before a digit or a letter (-1, -lcoframe) is a minus, not a hyphen
    return re.sub(r"(?<![\w])-(?=[\w])", r"\\-", text)


def roff_inline(text, own=()):
    """A paragraph as roff text: backquoted names bold, parameters italic."""
    out = []
    for k, part in enumerate(re.split(r"`([^`]*)`", text)):
        if k % 2 == 0:
            out.append(roff_escape(part))
        elif part.lstrip("*") in own:
            out.append("\\fI%s\\fP" % roff_escape(part))
        else:
            out.append("\\fB%s\\fP" % roff_escape(part))
    s = "".join(out)
    return "\\&" + s if s[:1] in (".", "'") else s


class Man:
    def __init__(self, doc, date, ver):
        self.doc, self.date, self.ver = doc, date, ver

    def th(self, name, sec):
        return '.TH %s %s %s "coframe %s" "coframe Manual"\n' % (name.upper(), sec, self.date, self.ver)

    def function(self, f):
        d = self.doc
        desc, safety, errors = sections(f.doc)
        own = params(f.text)
        out = [self.th(f.name, 3)]
        out.append(".SH NAME\n%s \\- %s\n" % (f.name, roff_inline(first_sentence(" ".join(desc)).replace("`", ""))))
        out.append(".SH LIBRARY\ncoframe (\\fIlibcoframe\\fP, \\fI\\-lcoframe\\fP)\n")
        proto = roff_escape(f.text).replace(f.name + "(", "\\fB%s\\fP(" % f.name, 1)
        out.append(".SH SYNOPSIS\n.nf\n.B #include <coframe.h>\n.PP\n%s\n.fi\n" % proto)
        out.append(".SH DESCRIPTION\n" + "\n.PP\n".join(roff_inline(p, own) for p in desc) + "\n")
        if safety:
            out.append(".SH SAFETY\n" + "\n.PP\n".join(roff_inline(p, own) for p in safety) + "\n")
        if errors:
            out.append(".SH RETURN VALUE\n\\fBCORO_OK\\fP (0) on success, else a negative code below.\n")
            out.append(".SH ERRORS\n")
            for k, (code, why) in enumerate(errors_list(errors)):
                if code is None:
                    out.append("%s%s\n" % (".PP\n" if k else "", roff_inline(sentence(why, True), own)))
                    continue
                if not why and code in d.codes:
                    why = lower_first(d.codes[code].doc)
                out.append(".TP\n.B %s\n%s\n" % (code, roff_inline(sentence(why), own)))
        also = [".BR %s (3)" % n for n in d.see_also(f)] + [".BR coframe (7)"]
        out.append(".SH SEE ALSO\n" + ",\n".join(also) + "\n")
        return "".join(out)

    def overview(self):
        d = self.doc
        out = [self.th("coframe", 7)]
        out.append(".SH NAME\ncoframe \\- coroutines resumable and cancellable from any thread, for C, C++ and Zig\n")
        out.append(".SH SYNOPSIS\n.nf\n.B #include <coframe.h>\n.PP\n"
                   "cc app.c $(pkg\\-config \\-\\-cflags \\-\\-libs coframe)\n.fi\n")
        intro = [" ".join(p.split()) for p in re.split(r"\n\s*\n", d.intro)]
        out.append(".SH DESCRIPTION\n" + "\n.PP\n".join(roff_escape(p) for p in intro) + "\n")
        out.append(".PP\nThe source tree's docs/TUTORIAL.md teaches the C API step by step; "
                   "docs/API.md records what each call does where the design is silent.\n")
        out.append(".SH FUNCTIONS\n")
        for title, fs in d.groups():
            out.append(".SS %s\n" % title)
            for f in fs:
                desc = sections(f.doc)[0]
                out.append(".TP\n.BR %s (3)\n%s\n" % (f.name, roff_inline(first_sentence(" ".join(desc)), params(f.text))))
        out.append(".SH TYPES\n")
        for t in d.types:
            out.append(".TP\n.B %s\n%s\n" % (t.name, "\n.IP\n".join(roff_inline(p) for p in sections(t.doc)[0])))
            for fld in t.fields:
                out.append(".RS\n.TP\n.I %s\n%s\n.RE\n" % (roff_escape(fld.text), roff_inline(" ".join(fld.doc.split()))))
        out.append(".SH CONSTANTS\n")
        for c in d.consts:
            names = [(c.name, c.value)] + c.also
            tag = ", ".join("\\fB%s\\fP (%s)" % (n, roff_escape(v)) for n, v in names)
            out.append(".TP\n%s\n%s\n" % (tag, "\n.IP\n".join(roff_inline(p) for p in sections(c.doc)[0])))
        out.append(".SH SEE ALSO\n.BR pkg\\-config (1)\n")
        return "".join(out)


# ---------------------------------------------------------------- HTML


def html_inline(text, doc, own=()):
    out = []
    for k, part in enumerate(re.split(r"`([^`]*)`", text)):
        if k % 2 == 0:
            out.append(html.escape(part, quote=False))
            continue
        key = part[:-2] if part.endswith("()") else part
        if key in doc.known:
            out.append('<a href="#%s"><code>%s</code></a>' % (key, html.escape(part)))
        elif part.lstrip("*") in own:
            out.append("<code><i>%s</i></code>" % html.escape(part))
        else:
            out.append("<code>%s</code>" % html.escape(part))
    return "".join(out)


CSS = """body{max-width:50em;margin:2em auto;padding:0 1em;font-family:sans-serif;line-height:1.45}
pre{background:#f4f4f4;padding:.6em;overflow-x:auto}a code,h2 code{font-weight:bold}
dt{margin-top:.4em}section{border-top:1px solid #ccc;margin-top:2em}"""


def write_html(doc, date, ver):
    d, out = doc, []
    out.append('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
               "<title>coframe %s API reference</title>\n<style>%s</style>\n</head>\n<body>\n" % (ver, CSS))
    out.append("<h1>coframe %s: the C API</h1>\n<p>Generated from <code>include/coframe.h</code> on %s. "
               "<code>#include &lt;coframe.h&gt;</code>, link with <code>-lcoframe</code> "
               "(<code>pkg-config --cflags --libs coframe</code>).</p>\n" % (ver, date))
    for p in re.split(r"\n\s*\n", d.intro):
        out.append("<p>%s</p>\n" % html.escape(" ".join(p.split()), quote=False))
    out.append('<h2 id="functions">Functions</h2>\n')
    for title, fs in d.groups():
        out.append("<h3>%s</h3>\n<dl>\n" % html.escape(title))
        for f in fs:
            out.append('<dt><a href="#%s"><code>%s</code></a></dt><dd>%s</dd>\n'
                       % (f.name, f.name, html_inline(first_sentence(" ".join(sections(f.doc)[0])), d)))
        out.append("</dl>\n")
    out.append('<h2 id="types">Types</h2>\n')
    for t in d.types:
        out.append('<h3 id="%s"><code>%s</code></h3>\n<pre>%s</pre>\n' % (t.name, t.name, html.escape(t.text)))
        out += ["<p>%s</p>\n" % html_inline(p, d) for p in sections(t.doc)[0]]
        if t.fields:
            out.append("<dl>\n")
            for fld in t.fields:
                out.append("<dt><code>%s</code></dt><dd>%s</dd>\n"
                           % (html.escape(fld.text), html_inline(" ".join(fld.doc.split()), d)))
            out.append("</dl>\n")
    out.append('<h2 id="constants">Constants</h2>\n<dl>\n')
    for c in d.consts:
        names = [(c.name, c.value)] + c.also
        out.append("<dt>%s</dt><dd>%s</dd>\n" % (
            ", ".join('<code id="%s">%s</code> (%s)' % (n, n, html.escape(v)) for n, v in names),
            " ".join("<p>%s</p>" % html_inline(p, d) for p in sections(c.doc)[0])))
    out.append("</dl>\n")
    for f in d.funcs:
        desc, safety, errors = sections(f.doc)
        own = params(f.text)
        out.append('<section>\n<h2 id="%s"><code>%s</code></h2>\n' % (f.name, f.name))
        out.append("<pre>#include &lt;coframe.h&gt;\n\n%s</pre>\n" % html.escape(f.text))
        out += ["<p>%s</p>\n" % html_inline(p, d, own) for p in desc]
        if safety:
            out.append("<h3>Safety</h3>\n")
            out += ["<p>%s</p>\n" % html_inline(p, d, own) for p in safety]
        if errors:
            out.append("<h3>Errors</h3>\n<p>Returns <code>CORO_OK</code> (0) on success, else:</p>\n<dl>\n")
            for code, why in errors_list(errors):
                if code is None:
                    out.append("<dd>%s</dd>\n" % html_inline(sentence(why, True), d, own))
                    continue
                if not why and code in d.codes:
                    why = lower_first(d.codes[code].doc)
                out.append('<dt><a href="#%s"><code>%s</code></a></dt><dd>%s</dd>\n'
                           % (code, code, html_inline(sentence(why), d, own)))
            out.append("</dl>\n")
        also = ['<a href="#%s"><code>%s</code></a>' % (n, n) for n in d.see_also(f)]
        out.append("<p>See also: %s.</p>\n</section>\n" % ", ".join(also + ['<a href="#functions">all functions</a>']))
    out.append("</body>\n</html>\n")
    return "".join(out)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description="coframe's man pages and HTML reference from coframe.h")
    ap.add_argument("--header", default=os.path.join(ROOT, "include", "coframe.h"))
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "docs"))
    args = ap.parse_args()
    doc = Doc(args.header)
    if not doc.funcs:
        sys.exit("apiref: no function found in %s" % args.header)
    date, ver = date_of(args.header), version()
    man = Man(doc, date, ver)
    # Pages of functions no longer in the header must not linger.
    man3 = os.path.join(args.out, "man", "man3")
    if os.path.isdir(man3):
        for old in os.listdir(man3):
            os.remove(os.path.join(man3, old))
    for f in doc.funcs:
        write(os.path.join(man3, f.name + ".3"), man.function(f))
    write(os.path.join(args.out, "man", "man7", "coframe.7"), man.overview())
    write(os.path.join(args.out, "html", "index.html"), write_html(doc, date, ver))
    print("apiref: %d man pages in %s, coframe.7, html/index.html" % (len(doc.funcs), man3))


if __name__ == "__main__":
    main()
