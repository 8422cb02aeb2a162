"""Constants and process helpers shared by the benchmark modules."""

import argparse
import datetime
import json
import os
import pathlib
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent  # the repository
MiB = 1 << 20
S3_PORT = 8333
BUCKETS = ["raw", "sealfs", "rclone", "gocryptfs", "s3fs"]
CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "benchsecret"}



def log(*a):
    print("bench:", *a, file=sys.stderr, flush=True)


def run(cmd, env=None, check=True, capture=True, timeout=None, **kw):
    if capture:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
    r = subprocess.run(cmd, env=env, check=False, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd if isinstance(cmd, str) else ' '.join(map(str, cmd))} failed "
                           f"({r.returncode}): {r.stderr or ''}{r.stdout or ''}"[-3000:])
    return r


def timed(cmd, **kw):
    t = time.monotonic()
    run(cmd, **kw)
    return time.monotonic() - t


class profiled:
    """`perf record` of process `pid` while the block runs (DWARF call graphs:
    the release build keeps line tables but no frame pointers), into
    $SEALFS_BENCH_PERF/<label>.perf.data when that variable names a directory
    (for the profiles issue notes show); otherwise nothing."""

    def __init__(self, label, pid):
        self.out = os.environ.get("SEALFS_BENCH_PERF")
        self.label, self.pid, self.proc = label, pid, None

    def __enter__(self):
        if self.out and self.pid:
            pathlib.Path(self.out).mkdir(parents=True, exist_ok=True)
            data = pathlib.Path(self.out) / f"{self.label}.perf.data"
            self.proc = subprocess.Popen(
                ["perf", "record", "-q", "-F", "499", "--call-graph", "dwarf,16384", "-p", str(self.pid), "-o", str(data)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        if self.proc:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return False


def median(xs):
    return statistics.median(xs) if xs else None


def drop_caches():
    subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True,
                   stderr=subprocess.DEVNULL, check=False)


def mounted(path):
    with open("/proc/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def pid_serving(mnt):
    """The process whose command line names the mountpoint (the FUSE daemon)."""
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            args = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(mnt).encode() in args and b"bash" not in args[0]:
            return int(p.name)
    return None


def peak_rss_mib(pid):
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def wait_gone(pid, timeout=600):
    end = time.monotonic() + timeout
    while pid and time.monotonic() < end:
        try:
            if not pathlib.Path(f"/proc/{pid}/cmdline").read_bytes():
                return
        except OSError:
            return
        time.sleep(0.05)


def unmount(mnt):
    if not mounted(mnt):
        return
    pid = pid_serving(mnt)
    if run(["fusermount3", "-u", str(mnt)], check=False).returncode != 0:
        time.sleep(1)
        if run(["fusermount3", "-u", str(mnt)], check=False).returncode != 0:
            run(["umount", "-l", str(mnt)], check=False)
    # A daemon that writes back is done once its process is gone.
    wait_gone(pid)


