#!/usr/bin/env python3
"""Memory of a mount walking a huge tree.

    walk.py SEALFS_BIN VOLUME_URL WORKDIR ENTRIES [--max-rss-mib N] [--cached-entries N]

Creates ENTRIES named pipes through a first mount (100 per directory, in two
levels: each one zero-byte object with authenticated attributes and no data
key, the cheapest entry a volume can hold; objects written straight into the
bucket would be refused, having no attribute MAC), mounts the volume afresh, and
walks it with `find`, `ls -lR` and `du` twice, the kernel's caches dropped in
between (so the kernel forgets the inodes, as it does under memory pressure).
Prints the daemon's RSS after each walk and its peak, and the inodes it
holds (from user.sealfs.stats), as one JSON line, and exits non-zero when the
peak exceeds --max-rss-mib, when the second walk needed more than the first
(memory that grows with every walk), or when, once the kernel forgot, the
mount holds more inodes than its cache bound (--cached-entries, passed to
the mount; default 50,000).
Needs the local stack's environment (admin credentials, AWS_ENDPOINT_URL).
"""
import concurrent.futures
import json
import os
import subprocess
import sys
import time


def daemon_pid(mnt):
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"mount" in args and mnt.encode() in args:
            return int(pid)
    raise SystemExit(f"walk: no daemon for {mnt}")


def status_kib(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def inodes(mnt):
    out = subprocess.run(["getfattr", "--only-values", "-n", "user.sealfs.stats", mnt],
                         check=True, capture_output=True).stdout
    return json.loads(out).get("inodes")


def create(sealfs, url, work, rels):
    """The tree, made through a mount of its own (unmounted after)."""
    mnt = os.path.join(work, "create-mnt")
    os.makedirs(mnt, exist_ok=True)
    subprocess.run([sealfs, "mount", url, mnt, "--cache-dir", os.path.join(work, "create-cache"),
                    "--log-file", os.path.join(work, "create.log")], check=True)
    try:
        for d in sorted({os.path.dirname(r) for r in rels}):
            os.makedirs(os.path.join(mnt, d), exist_ok=True)
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda r: os.mkfifo(os.path.join(mnt, r)), rels))
    finally:
        subprocess.run(["fusermount3", "-u", mnt], check=False)


def main():
    sealfs, url, work, entries = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    def opt(name, default):
        return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default
    max_rss = opt("--max-rss-mib", None)
    cap_arg = opt("--cached-entries", None)
    # WALK_ROUNDS=1: one walk only (a huge tree on a slow emulator).
    rounds = range(1, int(os.environ.get("WALK_ROUNDS", "2")) + 1)
    cap = 50_000 if cap_arg is None else cap_arg
    prefix = url[len("s3://"):].partition("/")[2]
    keys = [f"{prefix}/d{i // 10000:03d}/e{(i // 100) % 100:02d}/f{i % 100:02d}" for i in range(entries)]
    t0 = time.time()
    # WALK_REUSE=1: the objects are there from an earlier run (to compare builds).
    if os.environ.get("WALK_REUSE") != "1":
        create(sealfs, url, work, [k[len(prefix) + 1:] for k in keys])
    made = time.time() - t0
    mnt = os.path.join(work, "walk-mnt")
    os.makedirs(mnt, exist_ok=True)
    # A long TTL: the three tools of one walk share its listings, so the
    # walk costs one LIST and HEAD per entry, not three.
    subprocess.run([sealfs, "mount", url, mnt, "--cache-dir", os.path.join(work, "walk-cache"),
                    "--log-file", os.path.join(work, "walk.log"), "--metadata-ttl", "10m"]
                   + ([] if cap_arg is None else ["--cached-entries", str(cap_arg)]), check=True)
    figures = {"entries": entries, "create_s": round(made, 1)}
    try:
        pid = daemon_pid(mnt)
        figures["rss_mounted_mib"] = status_kib(pid, "VmRSS") // 1024
        for walk in rounds:
            t = time.time()
            found = subprocess.run(["find", mnt], check=True, capture_output=True).stdout.count(b"\n")
            subprocess.run(["ls", "-lR", mnt], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["du", "-s", mnt], check=True, stdout=subprocess.DEVNULL)
            figures[f"walk{walk}_s"] = round(time.time() - t, 1)
            figures[f"walk{walk}_found"] = found
            figures[f"inodes_after_walk{walk}"] = inodes(mnt)
            figures[f"rss_after_walk{walk}_mib"] = status_kib(pid, "VmRSS") // 1024
            # The kernel forgets what it cached; sealfs drops what it no longer needs.
            subprocess.run(["sync"], check=True)
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("2\n")
            time.sleep(1)
            figures[f"rss_after_forget{walk}_mib"] = status_kib(pid, "VmRSS") // 1024
            figures[f"inodes_after_forget{walk}"] = inodes(mnt)
        figures["rss_peak_mib"] = status_kib(pid, "VmHWM") // 1024
    finally:
        subprocess.run(["fusermount3", "-u", mnt], check=False)
    print("walk: " + json.dumps(figures))
    dirs = entries // 100 + (entries + 9999) // 10000
    problems = []
    for walk in rounds:
        if figures[f"walk{walk}_found"] < entries + dirs:
            problems.append(f"walk {walk} found {figures[f'walk{walk}_found']} entries, want {entries + dirs}+")
    # The second walk may reuse what the first freed; it must not need more.
    if len(rounds) > 1 and figures["rss_after_walk2_mib"] > figures["rss_after_walk1_mib"] * 1.15 + 16:
        problems.append("memory grew with the second walk")
    for walk in rounds:
        # The kernel still holds a few (the root, directories in use).
        held = figures[f"inodes_after_forget{walk}"]
        if held is not None and held > cap + 64:
            problems.append(f"{held} inodes held after the kernel forgot (bound {cap})")
    if max_rss is not None and figures["rss_peak_mib"] > max_rss:
        problems.append(f"peak RSS {figures['rss_peak_mib']} MiB over the bound of {max_rss} MiB")
    for p in problems:
        print("walk: " + p, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
