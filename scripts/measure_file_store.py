#!/usr/bin/env python3
"""Registry file storage, measured both ways with the registry's durability rules, to choose between them:

  A. chunks as SQLite blobs (WAL, synchronous=FULL: every insert fsyncs the WAL; checkpoints write it again)
  B. chunks as blob files (write, fsync, rename, fsync the folder) plus a small SQLite row (what the registry does)

Run: python3 scripts/measure_file_store.py [DIR] [CHUNKS]   (default: a temp folder, 100 chunks of 1 MiB)
"""
import os
import shutil
import sqlite3
import sys
import tempfile
import time

CHUNK = 1 << 20


def db(path, schema):
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    c.execute(schema)
    return c


def main():
    root = tempfile.mkdtemp(prefix="filestore-", dir=sys.argv[1] if len(sys.argv) > 1 else None)
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    data = os.urandom(CHUNK)
    try:
        a = db(os.path.join(root, "a.sqlite3"), "CREATE TABLE chunks(f BLOB, i INT, data BLOB, PRIMARY KEY(f, i)) STRICT")
        t = time.time()
        for i in range(n):
            a.execute("INSERT INTO chunks VALUES (?, ?, ?)", (b"f", i, data))
        wa = time.time() - t
        t = time.time()
        for i in range(n):
            a.execute("SELECT data FROM chunks WHERE f = ? AND i = ?", (b"f", i)).fetchone()
        ra = time.time() - t
        a.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        da = sum(os.path.getsize(os.path.join(root, f)) for f in os.listdir(root) if f.startswith("a."))

        b = db(os.path.join(root, "b.sqlite3"), "CREATE TABLE chunks(f BLOB, i INT, len INT, PRIMARY KEY(f, i)) STRICT")
        blobs = os.path.join(root, "blobs")
        os.makedirs(blobs)
        t = time.time()
        for i in range(n):
            tmp = os.path.join(blobs, "%08d.tmp" % i)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, os.path.join(blobs, "%08d.chunk" % i))
            dfd = os.open(blobs, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
            b.execute("INSERT INTO chunks VALUES (?, ?, ?)", (b"f", i, len(data)))
        wb = time.time() - t
        t = time.time()
        for i in range(n):
            with open(os.path.join(blobs, "%08d.chunk" % i), "rb") as f:
                f.read()
        rb = time.time() - t
        db_b = sum(os.path.getsize(os.path.join(root, f)) for f in os.listdir(root) if f.startswith("b."))
        dbb = sum(os.path.getsize(os.path.join(blobs, f)) for f in os.listdir(blobs)) + db_b
        mb = n * CHUNK / 1e6
        print("%d chunks of 1 MiB, durable writes" % n)
        print("SQLite blobs : write %6.1f MB/s  read %6.1f MB/s  disk %d bytes" % (mb / wa, mb / ra, da))
        print("blob files   : write %6.1f MB/s  read %6.1f MB/s  disk %d bytes" % (mb / wb, mb / rb, dbb))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
