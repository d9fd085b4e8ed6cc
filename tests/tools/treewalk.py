#!/usr/bin/python3
"""Walk a directory tree (e.g. a lazyroot mountpoint) and write it in exactly the formats of the
fixtures' oracle files (tests/fixtures/README.md, "The oracle files"):

  expected-tree.tsv       path type mode uid gid size sha256 target dev xattrs
  expected-hardlinks.tsv  "# hard-link groups: ..." then one line per inode: its paths, TAB-separated
  expected-mtimes.tsv     "path\tmtime" then path<TAB>integer seconds, every entry incl. directories

Entries are sorted bytewise on the raw path; the root is "/". Nothing is followed: lstat,
readlink and listxattr(follow_symlinks=False) on every entry, so symlinks report their own
xattrs (none in the fixtures), mode 0777 and size = target length.

CLI:   treewalk.py DIR [--tree OUT] [--hardlinks OUT] [--mtimes OUT]
                       [--compare FIXTURE_DIR [--suffix .linux-arm64]] [--max-diff N]
       With no --tree/--hardlinks/--mtimes/--compare the tree is printed on stdout.
       --compare checks DIR against FIXTURE_DIR/expected-*{suffix}.tsv, prints the first
       differences, exit status 1 if any.
Module: walk(root) -> list[Entry]; tree_lines / hardlink_lines / mtime_lines(entries) -> list[str];
        write_files(root, tree=, hardlinks=, mtimes=); diff_lines(actual, expected, ...);
        compare_to_expected(root, fixture_dir, suffix="", max_lines=20) -> list[str] (empty = equal)
"""

import argparse
import hashlib
import os
import stat
import sys

TREE_HEADER = "path\ttype\tmode\tuid\tgid\tsize\tsha256\ttarget\tdev\txattrs"
TREE_COLUMNS = TREE_HEADER.split("\t")
HARDLINKS_HEADER = "# hard-link groups: paths naming one inode, tab-separated"
MTIMES_HEADER = "path\tmtime"

_SIMPLE_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape(raw):
    """Escape a raw byte string (path or link target) the oracle's way: backslash, TAB, LF, CR as
    \\\\ \\t \\n \\r; other control bytes and bytes of invalid UTF-8 as \\xNN; valid UTF-8 and
    spaces verbatim."""
    s = raw.decode("utf-8", "surrogateescape")
    out = []
    for ch in s:
        o = ord(ch)
        if ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif 0xDC80 <= o <= 0xDCFF:  # undecodable byte
            out.append("\\x%02x" % (o - 0xDC00))
        elif o < 0x20 or o == 0x7F:
            out.append("\\x%02x" % o)
        else:
            out.append(ch)
    return "".join(out)


class Entry:
    __slots__ = ("path", "st", "type", "sha256", "target", "xattrs")

    def __init__(self, path, st, typ, sha256=None, target=None, xattrs=()):
        self.path = path        # raw bytes, absolute inside the tree ("/" = root)
        self.st = st
        self.type = typ
        self.sha256 = sha256
        self.target = target    # raw bytes
        self.xattrs = xattrs    # sorted list of (name, value bytes)


def _type_of(mode):
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    if stat.S_ISCHR(mode):
        return "c"
    if stat.S_ISBLK(mode):
        return "b"
    if stat.S_ISFIFO(mode):
        return "p"
    if stat.S_ISSOCK(mode):
        return "s"
    return "?"


def _sha256_file(fs_path):
    h = hashlib.sha256()
    fd = os.open(fs_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def _xattrs(fs_path):
    try:
        names = os.listxattr(fs_path, follow_symlinks=False)
    except OSError:
        # ENOTSUP (no xattr support) and the like: none
        return []
    out = []
    for name in sorted(names, key=lambda n: n.encode("utf-8", "surrogateescape")):
        try:
            val = os.getxattr(fs_path, name, follow_symlinks=False)
        except OSError as e:
            val = ("<error %s>" % (e.strerror or e.errno)).encode()
        out.append((name, val))
    return out


def walk(root, with_content=True, errors=None):
    """Walk root without following anything; return entries sorted bytewise on the raw path.
    with_content=False skips reading regular files (sha256 left None).
    errors: optional list that collects "path: error" strings for entries that could not be read
    (they then show up with sha256 '<error>' instead of raising)."""
    rootb = os.fsencode(root).rstrip(b"/") or b"/"
    entries = []
    stack = [b"/"]
    while stack:
        rel = stack.pop()
        fs_path = rootb if rel == b"/" else rootb + rel
        st = os.lstat(fs_path)
        typ = _type_of(st.st_mode)
        e = Entry(rel, st, typ, xattrs=_xattrs(fs_path))
        if typ == "f" and with_content:
            try:
                e.sha256 = _sha256_file(fs_path)
            except OSError as ex:
                if errors is None:
                    raise
                errors.append("%s: %s" % (escape(rel), ex))
                e.sha256 = "<error>"
        elif typ == "l":
            e.target = os.readlink(fs_path)
        elif typ == "d":
            prefix = b"" if rel == b"/" else rel
            with os.scandir(fs_path) as it:
                for de in it:
                    stack.append(prefix + b"/" + os.fsencode(de.name))
        entries.append(e)
    entries.sort(key=lambda e: e.path)
    return entries


def tree_line(e):
    st = e.st
    mode = 0o777 if e.type == "l" else stat.S_IMODE(st.st_mode)
    size = sha = target = dev = "-"
    if e.type == "f":
        size = str(st.st_size)
        sha = e.sha256 if e.sha256 is not None else "-"
    elif e.type == "l":
        size = str(len(e.target))
        target = escape(e.target)
    elif e.type in ("c", "b"):
        dev = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    xattrs = ",".join("%s=%s" % (n, v.hex()) for n, v in e.xattrs) if e.xattrs else "-"
    return "\t".join((escape(e.path), e.type, "%04o" % mode, str(st.st_uid), str(st.st_gid),
                      size, sha, target, dev, xattrs))


def tree_lines(entries):
    return [TREE_HEADER] + [tree_line(e) for e in entries]


def hardlink_groups(entries):
    """Groups of raw paths naming one inode (same st_dev+st_ino, non-directory, st_nlink > 1,
    at least two names inside the tree); paths sorted bytewise, groups ordered by first path."""
    by_ino = {}
    for e in entries:
        if e.type != "d" and e.st.st_nlink > 1:
            by_ino.setdefault((e.st.st_dev, e.st.st_ino), []).append(e.path)
    groups = [sorted(g) for g in by_ino.values() if len(g) > 1]
    groups.sort()
    return groups


def hardlink_lines(entries):
    return [HARDLINKS_HEADER] + ["\t".join(escape(p) for p in g) for g in hardlink_groups(entries)]


def mtime_lines(entries):
    return [MTIMES_HEADER] + ["%s\t%d" % (escape(e.path), e.st.st_mtime_ns // 1_000_000_000)
                              for e in entries]


def _write(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n", errors="surrogateescape") as f:
        for line in lines:
            f.write(line + "\n")


def write_files(root, tree=None, hardlinks=None, mtimes=None, entries=None):
    """Walk root (unless entries are given) and write the requested oracle-format files."""
    if entries is None:
        entries = walk(root, with_content=tree is not None)
    if tree:
        _write(tree, tree_lines(entries))
    if hardlinks:
        _write(hardlinks, hardlink_lines(entries))
    if mtimes:
        _write(mtimes, mtime_lines(entries))
    return entries


def read_lines(path):
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        data = f.read()
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def diff_lines(actual, expected, max_lines=20, columns=None, label=""):
    """Readable differences between two lists of oracle lines (keyed by the first column, the
    path). Returns a list of strings, at most max_lines (+1 summary line), empty if equal.
    columns: column names for per-column messages (tree format); None = whole-line messages."""
    if actual == expected:
        return []
    pre = (label + ": ") if label else ""
    out = []
    total = 0

    def add(msg):
        nonlocal total
        total += 1
        if len(out) < max_lines:
            out.append(pre + msg)

    if actual[:1] != expected[:1]:
        add("header: expected %r, got %r" % (expected[:1], actual[:1]))
    a_body, e_body = actual[1:], expected[1:]

    def keyed(lines):
        d = {}
        for ln in lines:
            d.setdefault(ln.split("\t", 1)[0], []).append(ln)
        return d

    ka, ke = keyed(a_body), keyed(e_body)
    # walk keys in expected order, then the extras in actual order
    seen = set()
    for k in [ln.split("\t", 1)[0] for ln in e_body] + [ln.split("\t", 1)[0] for ln in a_body]:
        if k in seen:
            continue
        seen.add(k)
        la, le = ka.get(k, []), ke.get(k, [])
        if la == le:
            continue
        if not la:
            add("missing: %s" % (le[0] if len(le) == 1 else le))
        elif not le:
            add("unexpected: %s" % (la[0] if len(la) == 1 else la))
        elif columns and len(la) == 1 and len(le) == 1:
            fa, fe = la[0].split("\t"), le[0].split("\t")
            parts = []
            for i in range(max(len(fa), len(fe))):
                va = fa[i] if i < len(fa) else "<none>"
                ve = fe[i] if i < len(fe) else "<none>"
                if va != ve:
                    name = columns[i] if i < len(columns) else "col%d" % (i + 1)
                    parts.append("%s expected %s got %s" % (name, ve, va))
            add("%s: %s" % (k, "; ".join(parts)))
        else:
            add("%s: expected %r got %r" % (k, le, la))
    if not total and a_body != e_body:
        add("same lines, different order")
    if total > len(out):
        out.append(pre + "... %d differences in all" % total)
    return out


def compare_to_expected(root, fixture_dir, suffix="", max_lines=20, entries=None,
                        which=("tree", "hardlinks", "mtimes")):
    """Walk root and compare with fixture_dir/expected-{tree,hardlinks,mtimes}{suffix}.tsv.
    Returns readable differences (empty list = identical)."""
    if entries is None:
        errs = []
        entries = walk(root, with_content="tree" in which, errors=errs)
    out = []
    makers = {"tree": (tree_lines, TREE_COLUMNS), "hardlinks": (hardlink_lines, None),
              "mtimes": (mtime_lines, MTIMES_HEADER.split("\t"))}
    for name in which:
        fn, cols = makers[name]
        exp = read_lines(os.path.join(fixture_dir, "expected-%s%s.tsv" % (name, suffix)))
        out += diff_lines(fn(entries), exp, max_lines=max_lines, columns=cols,
                          label="expected-%s%s.tsv" % (name, suffix))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="Walk a tree and print it in the fixtures' oracle formats.")
    ap.add_argument("dir")
    ap.add_argument("--tree", help="write expected-tree.tsv format here ('-' = stdout)")
    ap.add_argument("--hardlinks", help="write expected-hardlinks.tsv format here")
    ap.add_argument("--mtimes", help="write expected-mtimes.tsv format here")
    ap.add_argument("--compare", metavar="FIXTURE_DIR",
                    help="compare with FIXTURE_DIR/expected-*.tsv; exit 1 on differences")
    ap.add_argument("--suffix", default="", help="oracle file suffix, e.g. .linux-arm64")
    ap.add_argument("--max-diff", type=int, default=20)
    args = ap.parse_args(argv)

    if not os.path.isdir(args.dir):
        print("treewalk.py: %s: not a directory" % args.dir, file=sys.stderr)
        return 2
    entries = walk(args.dir)
    outs = {"tree": args.tree, "hardlinks": args.hardlinks, "mtimes": args.mtimes}
    if not any(outs.values()) and not args.compare:
        outs["tree"] = "-"
    makers = {"tree": tree_lines, "hardlinks": hardlink_lines, "mtimes": mtime_lines}
    for name, dest in outs.items():
        if not dest:
            continue
        lines = makers[name](entries)
        if dest == "-":
            sys.stdout.buffer.write(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
        else:
            _write(dest, lines)
    if args.compare:
        diffs = compare_to_expected(args.dir, args.compare, args.suffix, args.max_diff, entries)
        for d in diffs:
            print(d)
        return 1 if diffs else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
