#!/usr/bin/env python3
"""sealfs beside the raw backend and its peers, on one S3 server, in one run.

Run by scripts/bench inside a private network namespace (unshare --net): it
brings up loopback, starts SeaweedFS (`weed mini`, telemetry off, S3 on
127.0.0.1:8333) and moto (KMS for sealfs), and measures the workloads of
issue 6 on every system, each in its own bucket of the same server:

  raw       the same bytes PUT/GET with the AWS SDK (`sealfs raw`)
  sealfs    this project (default mode; W3 also with --write-back)
  rclone    rclone mount of a crypt remote, --vfs-cache-mode writes
  gocryptfs gocryptfs over an s3fs mount
  s3fs      s3fs alone, the unencrypted reference

Results go to bench/results/<date>.json and .md (and a PNG chart with
matplotlib). Timings are medians of --reps runs; ratios compare medians of
this one run. Every server and mount it starts is stopped by PID/unmounted,
also on failure.
"""

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

ROOT = pathlib.Path(__file__).resolve().parent.parent
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


class Servers:
    """SeaweedFS (S3) and moto (KMS), on loopback, stopped by PID."""

    def __init__(self, work, venv):
        self.work, self.venv, self.procs = work, venv, []

    def start(self):
        run(["ip", "link", "set", "lo", "up"])
        data = self.work / "weed"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        weed = self.venv / "bin" / "weed"
        self.procs.append(subprocess.Popen(
            [str(weed), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             "-master.telemetry=false", "-admin.ui=false", "-bucket=" + ",".join(BUCKETS)],
            stdout=open(self.work / "weed.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True))
        self.moto_port = 5055
        self.procs.append(subprocess.Popen(
            [str(self.venv / "bin" / "moto_server"), "-H", "127.0.0.1", "-p", str(self.moto_port)],
            stdout=open(self.work / "moto.log", "w"), stderr=subprocess.STDOUT,
            start_new_session=True))
        self.wait_http(f"http://127.0.0.1:{S3_PORT}/", "SeaweedFS")
        self.wait_http(f"http://127.0.0.1:{self.moto_port}/moto-api/", "moto")
        key = run([str(self.venv / "bin" / "python"), "-c",
                   "import boto3,sys; k=boto3.client('kms',endpoint_url=sys.argv[1],region_name='us-east-1')"
                   ".create_key(Description='sealfs bench'); print(k['KeyMetadata']['Arn'])",
                   f"http://127.0.0.1:{self.moto_port}"], env={**os.environ, **CREDS}).stdout.strip()
        self.kms_key = key
        log(f"SeaweedFS on 127.0.0.1:{S3_PORT}, moto KMS on 127.0.0.1:{self.moto_port}")

    def wait_http(self, url, what):
        for _ in range(240):
            if run(["curl", "-fsS", "-o", "/dev/null", url], check=False).returncode == 0:
                return
            time.sleep(0.25)
        raise RuntimeError(f"{what} did not start; see {self.work}")

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)


class Bench:
    def __init__(self, args):
        self.a = args
        self.work = ROOT / "bench" / "work"
        self.sealfs = pathlib.Path(args.sealfs).resolve()
        self.venv = pathlib.Path(args.venv)
        self.servers = Servers(self.work, self.venv)
        self.mounts = []
        self.results = {}
        self.requests = {}
        self.notes = []

    # ---------- environment ----------
    def env(self):
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("AWS_") and k not in ("SEALFS_ENDPOINT_URL",)}
        e.update(CREDS)
        e.update({"AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                  "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.servers.moto_port}",
                  "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{S3_PORT}"})
        return e

    def raw(self, bucket, *op):
        r = run([str(self.sealfs), "raw", bucket, *map(str, op)], env=self.env())
        return json.loads(r.stdout.strip().splitlines()[-1])

    def make_bucket(self, bucket):
        empty = self.work / "empty"
        empty.write_bytes(b"")
        self.raw(bucket, "put", empty, ".bench-bucket")

    def wait_backend(self, bucket, prefix, objects=None, nbytes=None, timeout=900):
        """Until the bucket holds >= `objects` objects / `nbytes` bytes under prefix."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            c = self.raw(bucket, "count", prefix)
            if (objects is None or c["objects"] >= objects) and (nbytes is None or c["bytes"] >= nbytes):
                return
            time.sleep(0.2)
        raise RuntimeError(f"backend never reached {objects} objects / {nbytes} bytes in {bucket}/{prefix}")

    # ---------- systems ----------
    def systems(self):
        names = ["raw", "sealfs"] if self.a.quick else ["raw", "sealfs", "rclone", "gocryptfs", "s3fs"]
        if self.a.systems:
            names = [n for n in ["raw", "sealfs", "rclone", "gocryptfs", "s3fs"] if n in self.a.systems.split(",")]
        return names

    def mnt(self, name):
        p = self.work / "mnt" / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def mount(self, name, write_back=False):
        """Mounts `name` (fresh process); returns (mountpoint, bucket, prefix, pid)."""
        e = self.env()
        if name == "sealfs":
            m = self.mnt("sealfs-wb" if write_back else "sealfs")
            cache = self.work / ("cache-wb" if write_back else "cache")
            args = [str(self.sealfs), "mount", "s3://sealfs/vol", str(m), "--cache-dir", str(cache),
                    "--log-file", str(self.work / "sealfs.log")]
            if write_back:
                args.append("--write-back")
            run(args, env={**e, "SEALFS_LOG": "warn"})
            bucket, prefix = "sealfs", "vol/"
        elif name == "s3fs":
            m = self.mnt("s3fs")
            self.s3fs_mount("s3fs", m)
            bucket, prefix = "s3fs", ""
        elif name == "gocryptfs":
            lower = self.mnt("gocryptfs-s3fs")
            self.s3fs_mount("gocryptfs", lower)
            m = self.mnt("gocryptfs")
            cipher = lower / "c"
            if not (cipher / "gocryptfs.conf").exists():
                cipher.mkdir(exist_ok=True)
                run(["gocryptfs", "-init", "-q", "-scryptn", "10", "-extpass", "echo benchpass", str(cipher)])
            run(["gocryptfs", "-q", "-extpass", "echo benchpass", str(cipher), str(m)])
            bucket, prefix = "gocryptfs", "c/"
        elif name == "rclone":
            m = self.mnt("rclone")
            log_f = open(self.work / "rclone.log", "a")
            subprocess.Popen(["rclone", "mount", "crypt:", str(m), "--vfs-cache-mode", "writes",
                              "--vfs-write-back", "0s", "--cache-dir", str(self.work / "rclone-cache")],
                             env=self.rclone_env(), stdout=log_f, stderr=subprocess.STDOUT,
                             start_new_session=True)
            for _ in range(200):
                if mounted(m):
                    break
                time.sleep(0.05)
            bucket, prefix = "rclone", "c/"
        else:
            raise ValueError(name)
        if not mounted(m):
            raise RuntimeError(f"{name} did not mount at {m}")
        self.mounts.append(m)
        return m, bucket, prefix, pid_serving(m)

    def unmount(self, name, m):
        unmount(m)
        if name == "gocryptfs":
            unmount(self.mnt("gocryptfs-s3fs"))

    def s3fs_mount(self, bucket, m):
        pw = self.work / "s3fs.passwd"
        pw.write_text(f"{CREDS['AWS_ACCESS_KEY_ID']}:{CREDS['AWS_SECRET_ACCESS_KEY']}\n")
        pw.chmod(0o600)
        run(["s3fs", bucket, str(m), "-o", f"url=http://127.0.0.1:{S3_PORT}", "-o", "use_path_request_style",
             "-o", f"passwd_file={pw}", "-o", "endpoint=us-east-1", "-o", "dbglevel=warn"],
            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
        for _ in range(100):
            if mounted(m):
                self.mounts.append(m)
                return
            time.sleep(0.05)

    def rclone_env(self):
        e = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}  # rclone 1.60 fails on AWS_CA_BUNDLE
        obscured = run(["rclone", "obscure", "benchpass"]).stdout.strip()
        e.update({
            "RCLONE_CONFIG_S3_TYPE": "s3", "RCLONE_CONFIG_S3_PROVIDER": "Other",
            "RCLONE_CONFIG_S3_ENDPOINT": f"http://127.0.0.1:{S3_PORT}",
            "RCLONE_CONFIG_S3_ACCESS_KEY_ID": CREDS["AWS_ACCESS_KEY_ID"],
            "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY": CREDS["AWS_SECRET_ACCESS_KEY"],
            "RCLONE_CONFIG_S3_FORCE_PATH_STYLE": "true",
            "RCLONE_CONFIG_CRYPT_TYPE": "crypt", "RCLONE_CONFIG_CRYPT_REMOTE": "s3:rclone/c",
            "RCLONE_CONFIG_CRYPT_PASSWORD": obscured,
        })
        return e

    def stats(self, m):
        """sealfs counters (S3 requests by type, KMS calls) from the root attribute."""
        r = run(["getfattr", "--only-values", "-n", "user.sealfs.stats", str(m)])
        return json.loads(r.stdout)

    @staticmethod
    def delta(before, after):
        out = {}
        for part in ("s3", "kms"):
            for k, v in after[part].items():
                d = v - before[part].get(k, 0)
                if d:
                    out[k] = d
        return out

    def record(self, workload, system, **values):
        self.results.setdefault(workload, {}).setdefault(system, {})
        for k, v in values.items():
            self.results[workload][system].setdefault(k, []).append(v)

    # ---------- inputs ----------
    def inputs(self):
        self.src = self.work / "src"
        self.src.mkdir(parents=True, exist_ok=True)
        self.big = self.src / "big.bin"
        if not self.big.exists() or self.big.stat().st_size != self.a.big_mib * MiB:
            log(f"writing a {self.a.big_mib} MiB random input")
            run(["dd", "if=/dev/urandom", f"of={self.big}", "bs=1M", f"count={self.a.big_mib}", "status=none"])
        self.small = self.src / "small"
        if not self.small.exists() or len(list(self.small.iterdir())) != self.a.files:
            shutil.rmtree(self.small, ignore_errors=True)
            self.small.mkdir()
            rnd = random.Random(3)
            for i in range(self.a.files):
                (self.small / f"f{i:05}").write_bytes(rnd.randbytes(4096))
        self.entries = self.src / "entries"
        if not self.entries.exists() or len(list(self.entries.iterdir())) != self.a.entries:
            shutil.rmtree(self.entries, ignore_errors=True)
            self.entries.mkdir()
            for i in range(self.a.entries):
                (self.entries / f"e{i:05}").write_bytes(b"")
        run(["cat", str(self.big)], stdout=subprocess.DEVNULL, capture=False)  # warm: dd reads from memory

    # ---------- workloads ----------
    def w1_w2(self, name, rep):
        size = self.a.big_mib * MiB
        if name == "raw":
            r = self.raw("raw", "put", self.big, f"w1/{rep}")
            self.record("W1", "raw", seconds=r["seconds"], complete=r["seconds"], mib_s=size / MiB / r["seconds"])
            drop_caches()
            r = self.raw("raw", "get", f"w1/{rep}")
            self.record("W2", "raw", seconds=r["seconds"], mib_s=size / MiB / r["seconds"])
            return
        m, bucket, prefix, pid = self.mount(name)
        before = self.stats(m) if name == "sealfs" else None
        base = self.raw(bucket, "count", prefix)["bytes"]
        target = m / f"w1-{rep}.bin"
        t0 = time.monotonic()
        run(["dd", f"if={self.big}", f"of={target}", "bs=1M", "conv=fsync", "status=none"])
        t_dd = time.monotonic() - t0
        self.wait_backend(bucket, prefix, nbytes=base + size)
        t_done = time.monotonic() - t0
        if before:
            self.requests.setdefault("W1", self.delta(before, self.stats(m)))
        rss1 = peak_rss_mib(pid)
        self.unmount(name, m)
        self.record("W1", name, seconds=t_dd, complete=t_done, mib_s=size / MiB / t_done)
        drop_caches()
        m, bucket, prefix, pid = self.mount(name)
        before = self.stats(m) if name == "sealfs" else None
        t = timed(["dd", f"if={m / f'w1-{rep}.bin'}", "of=/dev/null", "bs=1M", "status=none"])
        if before:
            self.requests.setdefault("W2", self.delta(before, self.stats(m)))
        rss2 = peak_rss_mib(pid)
        self.unmount(name, m)
        self.record("W2", name, seconds=t, mib_s=size / MiB / t)
        rss = [x for x in (rss1, rss2) if x is not None]
        if rss:
            self.record("W6", name, peak_rss_mib=max(rss))

    def w3(self, name, rep, write_back=False):
        label = name + (" --write-back" if write_back else "")
        n = self.a.files
        if name == "raw":
            r = self.raw("raw", "put-many", self.small, f"w3/{rep}", "--concurrency", "8")
            self.record("W3", "raw (8 concurrent PUT)", seconds=r["seconds"], complete=r["seconds"],
                        files_s=n / r["seconds"])
            return
        m, bucket, prefix, pid = self.mount(name, write_back=write_back)
        before = self.stats(m) if name == "sealfs" else None
        base = self.raw(bucket, "count", prefix)["objects"]
        d = m / f"w3-{rep}{'-wb' if write_back else ''}"
        t0 = time.monotonic()
        run(["cp", "-r", str(self.small), str(d)])
        t_cp = time.monotonic() - t0
        self.wait_backend(bucket, prefix, objects=base + n)
        t_done = time.monotonic() - t0
        self.record("W3", label, seconds=t_cp, complete=t_done, files_s=n / t_done)
        if before:
            written = self.delta(before, self.stats(m))
            # Read everything back within the key cache's age: no KMS Decrypt.
            mid = self.stats(m)
            run(["cat"] + [str(p) for p in sorted(d.iterdir())], stdout=subprocess.DEVNULL,
                capture=False)
            read = self.delta(mid, self.stats(m))
            self.requests.setdefault("W3" + (" write-back" if write_back else ""),
                                     {"write": written, "read back": read})
        self.unmount(name, m)

    def w4_prepare(self, name):
        """A directory of `entries` empty files, made the fastest way each system allows."""
        if name == "raw":
            self.raw("raw", "put-many", self.entries, "w4", "--concurrency", "16")
        elif name == "sealfs":
            m, *_ = self.mount("sealfs", write_back=True)
            run(["cp", "-r", str(self.entries), str(m / "w4")])
            self.unmount("sealfs", m)
        elif name == "s3fs":
            self.raw("s3fs", "put-many", self.entries, "w4", "--concurrency", "16")
        elif name == "rclone":
            run(["rclone", "copy", str(self.entries), "crypt:w4", "--transfers", "16"], env=self.rclone_env())
        elif name == "gocryptfs":
            # Encrypt locally through gocryptfs, then upload the cipher tree as is.
            local_c, local_p = self.work / "goc-c", self.work / "goc-p"
            for d in (local_c, local_p):
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir()
            m, *_ = self.mount("gocryptfs")  # creates the bucket's gocryptfs.conf
            shutil.copy(self.mnt("gocryptfs-s3fs") / "c" / "gocryptfs.conf", local_c)
            shutil.copy(self.mnt("gocryptfs-s3fs") / "c" / "gocryptfs.diriv", local_c)
            self.unmount("gocryptfs", m)
            run(["gocryptfs", "-q", "-extpass", "echo benchpass", str(local_c), str(local_p)])
            shutil.copytree(self.entries, local_p / "w4")
            unmount(local_p)
            cdirs = [p for p in local_c.iterdir() if p.is_dir()]
            assert len(cdirs) == 1, cdirs
            self.raw("gocryptfs", "put-many", cdirs[0], f"c/{cdirs[0].name}", "--concurrency", "16")
            diriv = self.work / "diriv"
            shutil.copy(cdirs[0] / "gocryptfs.diriv", diriv)

    def w4(self, name, rep):
        if name == "raw":
            r = self.raw("raw", "count", "w4/")
            self.record("W4", "raw (LIST only)", seconds=r["seconds"])
            return
        drop_caches()
        m, bucket, prefix, pid = self.mount(name)
        before = self.stats(m) if name == "sealfs" else None
        t0 = time.monotonic()
        out = run(["ls", "-l", str(m / "w4")]).stdout
        t = time.monotonic() - t0
        got = len(out.splitlines()) - 1
        if got < self.a.entries:
            raise RuntimeError(f"{name}: ls -l listed {got} of {self.a.entries} entries")
        if before:
            self.requests.setdefault("W4", self.delta(before, self.stats(m)))
        self.unmount(name, m)
        self.record("W4", name, seconds=t)

    def w5_prepare(self, name):
        size = self.a.random_mib * MiB
        src = self.work / "w5.bin"
        if not src.exists() or src.stat().st_size != size:
            run(["dd", f"if={self.big}", f"of={src}", "bs=1M", f"count={self.a.random_mib}", "status=none"])
        if name == "raw":
            self.raw("raw", "put", src, "w5")
            return
        m, *_ = self.mount(name)
        run(["cp", str(src), str(m / "w5.bin")])
        self.unmount(name, m)

    def w5(self, name):
        if name == "raw":
            r = self.raw("raw", "random-get", "w5", "--count", str(self.a.random_count))
            self.record("W5", "raw", iops=r["iops"])
            return
        drop_caches()
        m, *_ = self.mount(name)
        r = run(["fio", "--name=w5", f"--filename={m / 'w5.bin'}", "--rw=randread", "--bs=4k",
                 f"--size={self.a.random_mib}M", "--ioengine=psync", "--direct=0", "--invalidate=1",
                 "--time_based", f"--runtime={self.a.random_seconds}", "--output-format=json"],
                timeout=self.a.random_seconds + 300)
        iops = json.loads(r.stdout)["jobs"][0]["read"]["iops"]
        self.unmount(name, m)
        self.record("W5", name, iops=iops)

    def format_speed(self):
        r = run([str(ROOT / "scripts" / "bench-format")], env={**os.environ, "BENCH_PROFILE": "release"},
                timeout=1800)
        self.results["format"] = parse_format(r.stdout)

    # ---------- the run ----------
    def go(self):
        self.work.mkdir(parents=True, exist_ok=True)
        self.servers.start()
        try:
            names = self.systems()
            for b in BUCKETS:  # weed creates them shortly after S3 is up
                for _ in range(120):
                    if run([str(self.sealfs), "raw", b, "count", ""], env=self.env(), check=False).returncode == 0:
                        break
                    time.sleep(0.25)
            if "sealfs" in names:
                run([str(self.sealfs), "init", "s3://sealfs/vol", "--kms-key",
                     self.servers.kms_key], env=self.env())
            self.inputs()
            # A fresh SeaweedFS allocates volumes on the first writes: warm
            # every bucket up so that no system pays for that in its numbers.
            for b in BUCKETS:
                self.raw(b, "put-many", self.small, "warmup", "--concurrency", "8")
            want = set((self.a.only or "W1,W2,W3,W4,W5,format").split(","))
            for rep in range(self.a.reps):
                for n in names:
                    if want & {"W1", "W2"}:
                        log(f"W1/W2 {n} (run {rep + 1}/{self.a.reps})")
                        self.w1_w2(n, rep)
                for n in names:
                    if "W3" in want:
                        log(f"W3 {n} (run {rep + 1}/{self.a.reps})")
                        self.w3(n, rep)
                        if n == "sealfs":
                            self.w3(n, rep, write_back=True)
            for n in names:
                if "W4" in want:
                    log(f"W4 {n}: preparing {self.a.entries} entries")
                    self.w4_prepare(n)
                    for rep in range(self.a.reps):
                        self.w4(n, rep)
            for n in names:
                if "W5" in want:
                    log(f"W5 {n}")
                    self.w5_prepare(n)
                    self.w5(n)
            if not self.a.quick and "format" in want:
                log("format seal/open against openssl")
                self.format_speed()
        except Exception as e:
            # Keep what was measured: the report says what failed.
            log(f"FAILED: {e}")
            self.notes.append(f"run stopped early: {e}")
            if self.a.quick:
                raise
        finally:
            for m in reversed(self.mounts):
                unmount(m)
            self.servers.stop()
        return self.report()

    def report(self):
        summary = {}
        for w, systems in self.results.items():
            if w == "format":
                summary[w] = systems
                continue
            summary[w] = {s: {k: median(v) for k, v in vals.items()} for s, vals in systems.items()}
        ratios = ratios_of(summary)
        doc = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "mode": "quick" if self.a.quick else "full",
            "machine": machine(),
            "versions": versions(self.sealfs, self.venv),
            "parameters": {"reps": self.a.reps, "big_mib": self.a.big_mib, "files": self.a.files,
                           "entries": self.a.entries, "random_mib": self.a.random_mib,
                           "random_seconds": self.a.random_seconds},
            "medians": summary,
            "runs": self.results,
            "sealfs_requests": self.requests,
            "ratios": ratios,
            "notes": self.notes,
        }
        return doc


def parse_format(text):
    """The summary lines of scripts/bench-format:
    `format/open/65536   7595 MiB/s  = 2.67 x openssl` and
    `openssl aes-256-gcm, 16 KiB blocks:     2847 MiB/s`."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("format/") and line.endswith("x openssl"):
            out[parts[0]] = {"mib_s": float(parts[1]), "x_openssl": float(parts[-3])}
        elif line.startswith("openssl aes-256-gcm"):
            out["openssl"] = {"mib_s": float(line.split(":")[1].split()[0])}
    return out


def ratios_of(s):
    """The issue's targets, as measured ratios (None where a system was not run)."""
    def get(w, sys_, k):
        return s.get(w, {}).get(sys_, {}).get(k)

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    r = {
        "W2 read vs raw GET": ratio(get("W2", "sealfs", "mib_s"), get("W2", "raw", "mib_s")),
        "W2 read vs rclone crypt": ratio(get("W2", "sealfs", "mib_s"), get("W2", "rclone", "mib_s")),
        "W1 write vs raw PUT": ratio(get("W1", "sealfs", "mib_s"), get("W1", "raw", "mib_s")),
        "W1 write vs rclone crypt": ratio(get("W1", "sealfs", "mib_s"), get("W1", "rclone", "mib_s")),
        "W3 default vs s3fs": ratio(get("W3", "sealfs", "files_s"), get("W3", "s3fs", "files_s")),
        "W3 write-back vs raw 8x PUT": ratio(get("W3", "sealfs --write-back", "files_s"),
                                             get("W3", "raw (8 concurrent PUT)", "files_s")),
        "W3 write-back vs rclone crypt": ratio(get("W3", "sealfs --write-back", "files_s"),
                                               get("W3", "rclone", "files_s")),
        "W4 speed vs rclone crypt": ratio(get("W4", "rclone", "seconds"), get("W4", "sealfs", "seconds")),
        "W4 speed vs s3fs": ratio(get("W4", "s3fs", "seconds"), get("W4", "sealfs", "seconds")),
        "W5 IOPS vs rclone crypt": ratio(get("W5", "sealfs", "iops"), get("W5", "rclone", "iops")),
        "W5 IOPS vs raw GET": ratio(get("W5", "sealfs", "iops"), get("W5", "raw", "iops")),
        "W6 peak RSS MiB": get("W6", "sealfs", "peak_rss_mib"),
    }
    fmt = s.get("format", {})
    for k in ("format/seal", "format/open"):
        if f"{k}/65536" in fmt:  # the default 64 KiB segments
            r[f"{k} vs openssl"] = fmt[f"{k}/65536"]["x_openssl"]
    return r


TARGETS = {
    "W2 read vs raw GET": (">=", 0.9), "W2 read vs rclone crypt": (">=", 2),
    "W1 write vs raw PUT": (">=", 0.8), "W1 write vs rclone crypt": (">=", 2),
    "W3 default vs s3fs": (">=", 3), "W3 write-back vs raw 8x PUT": (">=", 0.9),
    "W3 write-back vs rclone crypt": (">", 1), "W4 speed vs rclone crypt": (">", 1),
    "W4 speed vs s3fs": (">", 1), "W5 IOPS vs rclone crypt": (">=", 2),
    "W6 peak RSS MiB": ("<=", 256), "format/seal vs openssl": (">=", 0.5),
    "format/open vs openssl": (">=", 0.5),
}


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) // 1024 // 1024 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": mem, "kernel": platform.release()}


def versions(sealfs, venv):
    def v(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.splitlines()[0].strip()
        except Exception:
            return None
    rev = v(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return {"sealfs": f"{v([str(sealfs), '--version'])} ({rev})", "seaweedfs": v([str(venv / 'bin' / 'weed'), "version"]),
            "rclone": v(["rclone", "version"]), "s3fs": v(["s3fs", "--version"]),
            "gocryptfs": v(["gocryptfs", "--version"]), "fio": v(["fio", "--version"])}


def markdown(doc):
    m = doc["medians"]
    lines = [f"# sealfs benchmark, {doc['date']} ({doc['mode']})", "",
             f"Machine: {doc['machine']['cpus']} cores ({doc['machine']['cpu']}), "
             f"{doc['machine']['memory_gib']} GiB, Linux {doc['machine']['kernel']}. "
             f"Backend: SeaweedFS {doc['versions']['seaweedfs'] or ''} on 127.0.0.1, KMS: moto. "
             f"Medians of {doc['parameters']['reps']} runs.", ""]
    p = doc["parameters"]
    rows = [
        ("W1 write", f"{p['big_mib']} MiB dd bs=1M conv=fsync, until complete in S3", "W1", "mib_s", "MiB/s"),
        ("W2 read", "cold sequential read after remount", "W2", "mib_s", "MiB/s"),
        ("W3 copy", f"cp -r of {p['files']} x 4 KiB, until all in S3", "W3", "files_s", "files/s"),
        ("W4 ls -l", f"{p['entries']} entries, cold", "W4", "seconds", "s"),
        ("W5 random read", f"fio 4 KiB randread in {p['random_mib']} MiB", "W5", "iops", "IOPS"),
        ("W6 peak RSS", "filesystem process during W1/W2", "W6", "peak_rss_mib", "MiB"),
    ]
    systems = []
    for w in ("W1", "W2", "W3", "W4", "W5", "W6"):
        for s in m.get(w, {}):
            if s not in systems:
                systems.append(s)
    lines.append("| workload | " + " | ".join(systems) + " |")
    lines.append("|---|" + "---|" * len(systems))
    for title, what, w, k, unit in rows:
        cells = []
        for s in systems:
            val = m.get(w, {}).get(s, {}).get(k)
            cells.append("" if val is None else (f"{val:.0f}" if val >= 100 else f"{val:.2f}"))
        lines.append(f"| {title} ({unit}): {what} | " + " | ".join(cells) + " |")
    lines += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
    for k, v in doc["ratios"].items():
        op, goal = TARGETS.get(k, ("", None))
        met = "" if v is None or goal is None else ("yes" if eval(f"{v} {op} {goal}") else "**no**")
        lines.append(f"| {k} | {'' if v is None else v} | {op} {goal} | {met} |")
    if doc["sealfs_requests"]:
        lines += ["", "sealfs requests per workload (S3 by type, KMS calls):", ""]
        for w, r in doc["sealfs_requests"].items():
            lines.append(f"- {w}: `{json.dumps(r)}`")
    for n in doc.get("notes", []):
        lines += ["", f"Note: {n}"]
    fmt = m.get("format")
    if fmt:
        lines += ["", "Format on one core: " + ", ".join(
            f"{k} {v['mib_s']:.0f} MiB/s" for k, v in fmt.items())]
    return "\n".join(lines) + "\n"


def chart(doc, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no chart")
        return False
    m = doc["medians"]
    panels = [("W1 write MiB/s", "W1", "mib_s"), ("W2 read MiB/s", "W2", "mib_s"),
              ("W3 files/s", "W3", "files_s"), ("W4 ls -l seconds (lower is better)", "W4", "seconds"),
              ("W5 random 4K IOPS", "W5", "iops"), ("W6 peak RSS MiB (lower is better)", "W6", "peak_rss_mib")]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (title, w, k) in zip(axes.flat, panels):
        data = [(s, v.get(k)) for s, v in m.get(w, {}).items() if v.get(k) is not None]
        ax.barh([d[0] for d in data], [d[1] for d in data],
                color=["#2a7" if d[0].startswith("sealfs") else "#888" for d in data])
        ax.set_title(title)
        ax.invert_yaxis()
        for i, (_, val) in enumerate(data):
            ax.text(val, i, f" {val:.0f}" if val >= 10 else f" {val:.2f}", va="center", fontsize=8)
    fig.suptitle(f"sealfs vs raw S3 and peers on SeaweedFS — {doc['date'][:10]}, "
                 f"{doc['machine']['cpus']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, only sealfs and raw (CI)")
    ap.add_argument("--sealfs", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--systems", help="comma-separated subset")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--only", help="comma-separated workloads (W1..W5, format)")
    ap.add_argument("--out", help="results directory (default bench/results; bench/work/quick for --quick)")
    a = ap.parse_args()
    q = a.quick
    a.reps = a.reps or (1 if q else 3)
    a.big_mib = 64 if q else 1024
    a.files = 200 if q else 2000
    a.entries = 1000 if q else 10000
    a.random_mib = 32 if q else 256
    a.random_seconds = 5 if q else 20
    a.random_count = 500 if q else 4000
    doc = Bench(a).go()
    out = pathlib.Path(a.out or (ROOT / "bench" / ("work/quick" if q else "results")))
    out.mkdir(parents=True, exist_ok=True)
    stem = datetime.date.today().isoformat() + ("-quick" if q else "")
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(doc)
    if not q and chart(doc, out / f"{stem}.png"):
        md += f"\n![chart]({stem}.png)\n"
    (out / f"{stem}.md").write_text(md)
    print(md)
    log(f"results in {out / stem}.{{json,md}}")


if __name__ == "__main__":
    main()
