#!/usr/bin/python3
"""Throw-away X.509 material for the tests, made with the openssl command line (no Python
crypto modules): a CA, a server certificate for 127.0.0.1 signed by it (subjectAltName
IP:127.0.0.1 and DNS:localhost), a client certificate, and self-signed signing certificates
(the token server's). RSA 2048, valid for two days; private keys are written mode 0600.

Module:
    make_ca(dir, name="ca", cn=...)              -> Pair(cert, key)
    make_server_cert(dir, ca, name="server")     -> Pair  (signed by ca, for 127.0.0.1/localhost)
    make_client_cert(dir, ca, name="client")     -> Pair  (extendedKeyUsage clientAuth)
    make_self_signed(dir, name, cn)              -> Pair  (its own root; e.g. JWT signing)
    make_test_pki(dir)                           -> dict ca, server, client (Pairs)
CLI:
    tls.py DIR        writes ca.crt/ca.key, server.crt/server.key, client.crt/client.key into DIR
"""

import collections
import os
import secrets
import subprocess
import sys

OPENSSL = os.environ.get("OPENSSL", "openssl")
DAYS = "2"

Pair = collections.namedtuple("Pair", "cert key")


class TlsError(RuntimeError):
    pass


def _openssl(*args, cwd=None):
    p = subprocess.run([OPENSSL, *map(str, args)], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, timeout=60)
    if p.returncode != 0:
        raise TlsError("openssl %s failed (%d): %s" % (args[0], p.returncode,
                                                       p.stderr.decode(errors="replace")))
    return p.stdout


def _serial():
    return "0x" + secrets.token_hex(8)


def _new_key(path):
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path)
    os.chmod(path, 0o600)


def make_self_signed(d, name, cn, ca=True):
    """A self-signed certificate d/NAME.crt with key d/NAME.key."""
    os.makedirs(d, exist_ok=True)
    cert, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    _new_key(key)
    exts = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"] \
        if ca else ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature"]
    args = ["req", "-x509", "-new", "-key", key, "-out", cert, "-days", DAYS, "-subj", "/CN=" + cn,
            "-set_serial", _serial()]
    for e in exts:
        args += ["-addext", e]
    _openssl(*args)
    return Pair(cert, key)


def make_ca(d, name="ca", cn="lazyroot test CA"):
    return make_self_signed(d, name, cn, ca=True)


def _signed(d, ca, name, cn, extensions):
    os.makedirs(d, exist_ok=True)
    cert, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    csr, ext = os.path.join(d, name + ".csr"), os.path.join(d, name + ".ext")
    _new_key(key)
    _openssl("req", "-new", "-key", key, "-out", csr, "-subj", "/CN=" + cn)
    with open(ext, "w") as f:
        f.write("\n".join(extensions) + "\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-set_serial", _serial(),
             "-out", cert, "-days", DAYS, "-sha256", "-extfile", ext)
    os.unlink(csr)
    os.unlink(ext)
    return Pair(cert, key)


def make_server_cert(d, ca, name="server", ips=("127.0.0.1",), dns=("localhost",)):
    san = ",".join(["IP:%s" % i for i in ips] + ["DNS:%s" % n for n in dns])
    return _signed(d, ca, name, ips[0] if ips else dns[0], [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=serverAuth",
        "subjectAltName=" + san,
    ])


def make_client_cert(d, ca, name="client", cn="lazyroot test client"):
    return _signed(d, ca, name, cn, [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        "extendedKeyUsage=clientAuth",
    ])


def make_test_pki(d):
    ca = make_ca(d)
    return {"ca": ca, "server": make_server_cert(d, ca), "client": make_client_cert(d, ca)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: tls.py DIR", file=sys.stderr)
        return 2
    pki = make_test_pki(argv[0])
    for k, v in pki.items():
        print("%s\t%s\t%s" % (k, v.cert, v.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
