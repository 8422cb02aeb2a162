#!/usr/bin/env python3
"""Concurrent load on a mounted directory: 8 writers and 8 readers.

    soak_load.py DIR SECONDS

Writers replace files whole (write a temporary file, then rename it over the
target, as editors and build tools do): each writer has its own files, and
all of them also replace four shared files. Every file carries a SHA-256 of
its own body in its first line, so a reader can tell a whole version from a
mix. Readers read random files and check them. Prints one summary line and
exits non-zero on any mismatch or unexpected error. EIO while reading a file
that another thread replaced at that moment is counted, not failed: the
reader's version was deleted under it, and sealfs refuses to mix versions.
"""
import errno
import hashlib
import os
import random
import sys
import threading
import time

root, seconds = sys.argv[1], float(sys.argv[2])
WRITERS = READERS = 8
SHARED = [f"shared-{i}" for i in range(4)]
stop = time.time() + seconds
lock = threading.Lock()
stats = {"writes": 0, "reads": 0, "bytes_written": 0, "bytes_read": 0, "eio_on_replace": 0, "enoent": 0}
problems = []


def body_for(writer, n):
    rnd = random.Random(writer * 1_000_003 + n)
    size = rnd.choice([0, 1, 100, 4096, 65535, 65536, 65537, 200_000, 1_000_000])
    return rnd.randbytes(size)


def sealed(body):
    return hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def check(data):
    head, _, body = data.partition(b"\n")
    return hashlib.sha256(body).hexdigest().encode() == head


def writer(w):
    n = 0
    own = [f"w{w}-{k}" for k in range(6)]
    while time.time() < stop:
        name = random.choice(own + SHARED)
        data = sealed(body_for(w, n))
        tmp = os.path.join(root, f".tmp-w{w}-{n}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, os.path.join(root, name))
        except OSError as e:
            with lock:
                problems.append(f"writer {w}: {name}: {e}")
            return
        n += 1
        with lock:
            stats["writes"] += 1
            stats["bytes_written"] += len(data)


def reader(r):
    names = [f"w{w}-{k}" for w in range(WRITERS) for k in range(6)] + SHARED
    while time.time() < stop:
        name = random.choice(names)
        try:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            with lock:
                stats["enoent"] += 1
            continue
        except OSError as e:
            with lock:
                if e.errno == errno.EIO:
                    stats["eio_on_replace"] += 1
                else:
                    problems.append(f"reader {r}: {name}: {e}")
            continue
        with lock:
            stats["reads"] += 1
            stats["bytes_read"] += len(data)
            if not check(data):
                problems.append(f"reader {r}: {name}: content is not one whole version ({len(data)} bytes)")


threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
threads += [threading.Thread(target=reader, args=(r,)) for r in range(READERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
# Final state: every file is one whole version.
for name in os.listdir(root):
    if name.startswith(".tmp-"):
        problems.append(f"leftover temporary file {name}")
        continue
    with open(os.path.join(root, name), "rb") as f:
        if not check(f.read()):
            problems.append(f"final {name}: not one whole version")
print(
    f"load: {seconds:.0f} s, {WRITERS} writers and {READERS} readers: {stats['writes']} replacements "
    f"({stats['bytes_written'] >> 20} MiB), {stats['reads']} verified reads ({stats['bytes_read'] >> 20} MiB), "
    f"{stats['eio_on_replace']} EIO on a file replaced mid-read, {stats['enoent']} reads of files not yet written, "
    f"{len(problems)} problems"
)
for p in problems[:20]:
    print("  " + p)
sys.exit(1 if problems else 0)
