"""Seek indexes that lie, crafted from an honest one (docs/formats.md, "Seek indexes"): each
index stays well formed (it parses), so only what reads check can catch it."""

import gzip
import hashlib
import struct
import zlib

CP, ENTRY, XATTR, CHUNK = 32, 116, 16, 56
REG = 0


class Index:
    def __init__(self, data):
        self.head = data[:24]
        b = zlib.decompress(data[24:])
        (self.layer, self.blob_size, self.tar_size, self.span, n_cps, n_entries, n_x, n_ch,
         n_str, n_win, _) = struct.unpack_from("<32sQQIIIIIIII", b, 0)
        p = 80
        self.cps = [list(struct.unpack_from("<QQBBxxII4x", b, p + CP * i)) for i in range(n_cps)]
        p += CP * n_cps
        self.entries = [bytearray(b[p + ENTRY * i:p + ENTRY * (i + 1)]) for i in range(n_entries)]
        p += ENTRY * n_entries
        self.xattrs = b[p:p + XATTR * n_x]
        p += XATTR * n_x
        self.chunks = [list(struct.unpack_from("<QQQ32s", b, p + CHUNK * i)) for i in range(n_ch)]
        p += CHUNK * n_ch
        self.strings = bytearray(b[p:p + n_str])
        p += n_str
        self.windows = bytearray(b[p:p + n_win])

    def serialize(self):
        body = struct.pack("<32sQQIIIIIIII", self.layer, self.blob_size, self.tar_size,
                           self.span, len(self.cps), len(self.entries), len(self.xattrs) // XATTR,
                           len(self.chunks), len(self.strings), len(self.windows), 0)
        body += b"".join(struct.pack("<QQBBxxII4x", *c) for c in self.cps)
        body += b"".join(bytes(e) for e in self.entries)
        body += self.xattrs
        body += b"".join(struct.pack("<QQQ32s", *c) for c in self.chunks)
        body += bytes(self.strings) + bytes(self.windows)
        return self.head[:16] + struct.pack("<Q", len(body)) + zlib.compress(body)

    # entries
    def u32(self, i, off):
        return struct.unpack_from("<I", self.entries[i], off)[0]

    def u64(self, i, off):
        return struct.unpack_from("<Q", self.entries[i], off)[0]

    def set_u32(self, i, off, v):
        struct.pack_into("<I", self.entries[i], off, v)

    def set_u64(self, i, off, v):
        struct.pack_into("<Q", self.entries[i], off, v)

    def path(self, i):
        o, n = self.u32(i, 52), self.u32(i, 56)
        return self.strings[o:o + n].decode()

    def set_path(self, i, path):
        self.set_u32(i, 52, len(self.strings))
        self.set_u32(i, 56, len(path))
        self.strings += path.encode()

    def files(self):
        """(entry index, size, data_off, first chunk, n chunks) of the regular files with data."""
        out = []
        for i, e in enumerate(self.entries):
            if e[0] == REG and self.u32(i, 80) > 0:
                out.append((i, self.u64(i, 28), self.u64(i, 44), self.u32(i, 76), self.u32(i, 80)))
        return out

    # checkpoints
    def window(self, k):
        """Checkpoint @k's window: (mask or None when whole, offset of its bytes, length).  A
        sparse one (flag 2) has its mask, a bit per byte, before its bytes."""
        _, _, _, flags, woff, wlen = self.cps[k]
        if flags & 2:
            return self.windows[woff:woff + (wlen + 7) // 8], woff + (wlen + 7) // 8, wlen
        return None, woff, wlen

    def window_bytes(self, k):
        _, off, n = self.window(k)
        return bytes(self.windows[off:off + n])

    def span_of(self, uoff):
        k = 0
        for i, c in enumerate(self.cps):
            if c[1] <= uoff:
                k = i
        return k


def used(mask, j):
    return mask is None or mask[j // 8] >> (j % 8) & 1


def tar_stream(layer_blob):
    return gzip.decompress(layer_blob)


def sha(b):
    return hashlib.sha256(b).digest()


def raw_inflate_from(blob, cp, window, upto):
    """The output of inflating @blob from checkpoint @cp (coff, uoff, bits, flags, ...) with
    @window as its dictionary, @upto bytes of it.  zlib's inflatePrime is not in Python: the
    stream is shifted by the checkpoint's bits instead, which moves the byte boundaries a
    stored block's length aligns to (so with bits, only for a span without stored blocks)."""
    coff, _, bits, flags = cp[0], cp[1], cp[2], cp[3]
    if flags & 1:
        return zlib.decompressobj(31).decompress(blob[coff:], upto)
    if bits:
        data = blob[coff - 1:]
        n = int.from_bytes(data, "little") >> (8 - bits)
        data = n.to_bytes(len(data), "little")
    else:
        data = blob[coff:]
    d = zlib.decompressobj(-15, zdict=bytes(window)) if window else zlib.decompressobj(-15)
    return d.decompress(data, upto)
