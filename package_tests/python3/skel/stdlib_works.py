"""Uses each extension module a little, so that a broken system library shows."""

import bz2
import ctypes
import ctypes.util
import hashlib
import lzma
import sqlite3
import ssl
import zlib

data = b"nixtest " * 1000
checks = 0


def check(name, ok):
    global checks
    if not ok:
        raise SystemExit(f"FAILED: {name}")
    checks += 1


check("zlib", zlib.decompress(zlib.compress(data)) == data and zlib.crc32(b"abc") == 0x352441C2)
check("bz2", bz2.decompress(bz2.compress(data)) == data)
check("lzma", lzma.decompress(lzma.compress(data)) == data)
check(
    "hashlib sha256",
    hashlib.sha256(b"abc").hexdigest() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
)
db = sqlite3.connect(":memory:")
db.execute("create table t (x integer)")
db.executemany("insert into t values (?)", [(i,) for i in range(10)])
check("sqlite3", db.execute("select sum(x) from t").fetchone()[0] == 45)
ctx = ssl.create_default_context()
check("ssl", ssl.OPENSSL_VERSION.startswith("OpenSSL") and ctx.verify_mode == ssl.CERT_REQUIRED)
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
check("ctypes", libc.strlen(b"nixtest") == 7)
check("ctypes abs", libc.abs(-5) == 5)
print(f"all {checks} checks passed")
