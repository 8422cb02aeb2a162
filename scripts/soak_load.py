#!/usr/bin/env python3
"""Concurrent load on a mounted directory: 8 writers and 8 readers.

    soak_load.py DIR SECONDS

Writers replace files whole (write a temporary file, then rename it over the
target, as editors and build tools do): each writer has its own files, and
all of them also replace four shared files. Every file carries a SHA-256 of
its own body in its first line, so a reader can tell a whole version from a
mix. Readers read random files and check them. Large files (SOAK_BIG_MIB,
default 24 MiB each) are rewritten by their own writers and read by six
readers at once, sequentially in odd-sized reads and by scattered preads
checked against the whole version read through the same descriptor, so that
a small read-ahead budget stays exhausted throughout. Prints one summary line and
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
BIG_WRITERS, BIG_READERS = 2, 6
BIG_MIB = int(os.environ.get("SOAK_BIG_MIB", "24"))
SHARED = [f"shared-{i}" for i in range(4)]
BIG = [f"big-{i}" for i in range(4)]
stop = time.time() + seconds
lock = threading.Lock()
stats = {"writes": 0, "reads": 0, "bytes_written": 0, "bytes_read": 0, "eio_on_replace": 0, "enoent": 0,
         "big_writes": 0, "big_reads": 0, "big_preads": 0}
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


def replace(who, tmp_name, name, data, counter):
    """Writes `data` to a temporary file and renames it over `name`, as
    editors do; False (and a problem noted) if that fails."""
    tmp = os.path.join(root, tmp_name)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(root, name))
    except OSError as e:
        with lock:
            problems.append(f"{who}: {name}: {e}")
        return False
    with lock:
        stats[counter] += 1
        stats["bytes_written"] += len(data)
    return True


def writer(w):
    n = 0
    own = [f"w{w}-{k}" for k in range(6)]
    while time.time() < stop:
        name = random.choice(own + SHARED)
        if not replace(f"writer {w}", f".tmp-w{w}-{n}", name, sealed(body_for(w, n)), "writes"):
            return
        n += 1


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


def big_body(w, n):
    rnd = random.Random(7_000_003 * (w + 1) + n)
    size = rnd.randrange(BIG_MIB << 19, (BIG_MIB << 20) + 1)
    return rnd.randbytes(size)


def big_writer(w):
    n = 0
    while True:
        name = BIG[(w + n) % len(BIG)]
        if not replace(f"big writer {w}", f".tmp-big{w}-{n}", name, sealed(big_body(w, n)), "big_writes"):
            return
        n += 1
        # Every big file exists before the readers start; then until the end.
        if n >= len(BIG) and time.time() >= stop:
            return


def big_reader(r):
    rnd = random.Random(r)
    while time.time() < stop:
        name = rnd.choice(BIG)
        try:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            parts, at = [], 0
            step = rnd.choice([4096, 65537, 131071, 1 << 20])
            while True:
                chunk = os.pread(fd, step, at)
                if not chunk:
                    break
                parts.append(chunk)
                at += len(chunk)
            data = b"".join(parts)
            if not check(data):
                with lock:
                    problems.append(f"big reader {r}: {name}: not one whole version ({len(data)} bytes)")
                continue
            # Scattered reads of the same (pinned) version, unaligned.
            for _ in range(16):
                off = rnd.randrange(0, len(data) + 1)
                n = rnd.choice([1, 4095, 19063, 300_001])
                # A read may be short (POSIX): when the version this
                # descriptor reads was replaced and its pages were dropped
                # (another open of the same file), the kernel returns what it
                # had before the EIO; the retry then gets the EIO.
                got = b""
                while len(got) < n:
                    part = os.pread(fd, n - len(got), off + len(got))
                    if not part:
                        break
                    got += part
                want = data[off:off + n]
                if got != want:
                    first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
                    with lock:
                        problems.append(f"big reader {r}: {name}: pread({n}, {off}) of {len(data)} bytes differs: "
                                        f"{len(got)} bytes, want {len(want)}, first difference at +{first}")
            with lock:
                stats["big_reads"] += 1
                stats["big_preads"] += 16
                stats["bytes_read"] += len(data)
        except OSError as e:
            with lock:
                if e.errno == errno.EIO:
                    stats["eio_on_replace"] += 1
                else:
                    problems.append(f"big reader {r}: {name}: {e}")
        finally:
            os.close(fd)


threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
if seconds > 0 and BIG_MIB > 0:
    # The big files exist before their readers start.
    first = [threading.Thread(target=big_writer, args=(w,)) for w in range(BIG_WRITERS)]
    for t in first:
        t.start()
    while stats["big_writes"] < len(BIG) and not problems:
        time.sleep(0.1)
    threads += first
    threads += [threading.Thread(target=big_reader, args=(r,)) for r in range(BIG_READERS)]
threads += [threading.Thread(target=reader, args=(r,)) for r in range(READERS)]
for t in threads:
    if not t.is_alive() and t.ident is None:
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
    f"{stats['big_writes']} rewrites and {stats['big_reads']} whole reads + {stats['big_preads']} preads of "
    f"{len(BIG)} files of up to {BIG_MIB} MiB, "
    f"{stats['eio_on_replace']} EIO on a file replaced mid-read, {stats['enoent']} reads of files not yet written, "
    f"{len(problems)} problems"
)
for p in problems[:20]:
    print("  " + p)
sys.exit(1 if problems else 0)
