"""The workloads (W1..W7 and the format speed), run on every system."""

from bench_lib.common import *  # noqa: F401,F403
from bench_lib.report import document, parse_format
from bench_lib.systems import Systems


class Bench(Systems):
    """Runs the chosen workloads on the chosen systems; `go` returns the report document."""

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
            if self.a.rtt_ms and rep == 0:
                self.proxy_check(f"w1/{rep}", size)
            return
        m, bucket, prefix, pid = self.mount(name)
        before = self.stats(m) if name == "sealfs" else None
        base = self.raw(bucket, "count", prefix)["bytes"]
        target = m / f"w1-{rep}.bin"
        t0 = time.monotonic()
        with profiled(f"W1-{name}-{self.a.rtt_ms}ms-{rep}", pid if name == "sealfs" else None):
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
        with profiled(f"W2-{name}-{self.a.rtt_ms}ms-{rep}", pid if name == "sealfs" else None):
            t = timed(["dd", f"if={m / f'w1-{rep}.bin'}", "of=/dev/null", "bs=1M", "status=none"])
        if before:
            self.requests.setdefault("W2", self.delta(before, self.stats(m)))
        rss2 = peak_rss_mib(pid)
        self.unmount(name, m)
        self.record("W2", name, seconds=t, mib_s=size / MiB / t)
        rss = [x for x in (rss1, rss2) if x is not None]
        if rss:
            self.record("W6", name, peak_rss_mib=max(rss))
        if name == "sealfs":
            # The same read with the encrypted read cache off: what filling
            # it costs a cold read on this machine, whose cores the S3
            # server shares.
            drop_caches()
            label = "sealfs --cache-size 0"
            m, _, _, pid = self.mount(name, extra=["--cache-size", "0"])
            with profiled(f"W2-nocache-{self.a.rtt_ms}ms-{rep}", pid):
                t = timed(["dd", f"if={m / f'w1-{rep}.bin'}", "of=/dev/null", "bs=1M", "status=none"])
            self.unmount(name, m)
            self.record("W2", label, seconds=t, mib_s=size / MiB / t)

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
        with profiled(f"W3-{label.replace(' ', '')}-{self.a.rtt_ms}ms-{rep}", pid if name == "sealfs" else None):
            t0 = time.monotonic()
            run(["cp", "-r", str(self.small), str(d)])
            t_cp = time.monotonic() - t0
        self.wait_backend(bucket, prefix, objects=base + n)
        t_done = time.monotonic() - t0
        self.record("W3", label, seconds=t_cp, complete=t_done, files_s=n / t_done)
        if before:
            written = self.delta(before, self.stats(m))
            self.record("W3", label, kms_calls=written.get("GenerateDataKey", 0) + written.get("Decrypt", 0))
            # Read everything back within the key cache's age: no KMS Decrypt.
            mid = self.stats(m)
            run(["cat"] + [str(p) for p in sorted(d.iterdir())], stdout=subprocess.DEVNULL,
                capture=False)
            read = self.delta(mid, self.stats(m))
            self.requests.setdefault("W3" + (" write-back" if write_back else ""),
                                     {"write": written, "read back": read})
        self.unmount(name, m)

    def w8(self, name, rep):
        """A cold `tar c` of W3's tree after a remount: every file opened and
        read once, one at a time (kernel caches dropped, sealfs's read cache
        emptied). The raw baseline GETs the same objects one at a time."""
        n = self.a.files
        if name == "raw":
            r = self.raw("raw", "get-many", f"w3/{rep}/")
            self.record("W8", "raw (LIST, GET one at a time)", seconds=r["seconds"], files_s=n / r["seconds"])
            return
        if name == "sealfs":
            shutil.rmtree(self.work / "cache" / "read-cache", ignore_errors=True)
        drop_caches()
        m, bucket, prefix, pid = self.mount(name)
        before = self.stats(m) if name == "sealfs" else None
        # Through a pipe: GNU tar reads nothing when its archive is /dev/null.
        t = timed(["bash", "-o", "pipefail", "-c", f"tar cf - -C {m} w3-{rep} | cat >/dev/null"])
        if before:
            d = self.delta(before, self.stats(m))
            self.requests.setdefault("W8", d)
            self.record("W8", name, kms_calls=d.get("GenerateDataKey", 0) + d.get("Decrypt", 0))
        self.unmount(name, m)
        self.record("W8", name, seconds=t, files_s=n / t)

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

    def w4(self, name, rep, system=None):
        """A cold `ls -l` after a remount. For sealfs the reps read the
        directory's attribute index, which the first cold listing after the
        writes built (it HEADs every entry): that first listing is recorded
        on its own row, `system`."""
        if name == "raw":
            r = self.raw("raw", "count", "w4/")
            self.record("W4", "raw (LIST only)", seconds=r["seconds"])
            return
        drop_caches()
        m, bucket, prefix, pid = self.mount(name)
        before = self.stats(m) if name == "sealfs" else None
        with profiled(f"W4-{'first' if system else name}-{self.a.rtt_ms}ms-{rep}", pid if name == "sealfs" else None):
            t0 = time.monotonic()
            out = run(["ls", "-l", str(m / "w4")]).stdout
            t = time.monotonic() - t0
        got = len(out.splitlines()) - 1
        if got < self.a.entries:
            raise RuntimeError(f"{name}: ls -l listed {got} of {self.a.entries} entries")
        if before:
            self.requests.setdefault(system or "W4", self.delta(before, self.stats(m)))
        self.unmount(name, m)
        self.record("W4", system or name, seconds=t)

    def proxy_check(self, key, size):
        """The proxy alone does not cap a client: the raw GET straight to
        the server and through a proxy that adds no delay."""
        direct = self.raw("raw", "get", key, s3_url=f"http://127.0.0.1:{S3_PORT}")
        url = self.servers.delayed(S3_PORT, 0, "s3-check")
        drop_caches()
        proxied = self.raw("raw", "get", key, s3_url=url)
        self.results["proxy check"] = {
            "raw GET direct MiB/s": round(size / MiB / direct["seconds"]),
            "raw GET through the proxy (0 ms) MiB/s": round(size / MiB / proxied["seconds"])}

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
        # "A file just written or read through the mount": read once, so
        # every system's own cache (sealfs's read cache, s3fs's and rclone's
        # local copies) may hold it, as after real use.
        drop_caches()
        m, *_ = self.mount(name)
        run(["cat", str(m / "w5.bin")], stdout=subprocess.DEVNULL, capture=False)
        if name == "sealfs":
            # What the read cache kept of that one read (its writer drops
            # what it cannot take in time).
            self.requests["W5 read once: read cache"] = self.stats(m).get("read_cache", {})
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

    def w7(self, name):
        """Reads the same file twice in one mount after a cold start: the
        second read shows what each system's caches save."""
        size = self.a.reread_mib * MiB
        src = self.work / "w7.bin"
        if not src.exists() or src.stat().st_size != size:
            run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={self.a.reread_mib}", "status=none"])
        if name == "raw":
            self.raw("raw", "put", src, "w7")
            for n in ("first", "second"):
                drop_caches()
                r = self.raw("raw", "get", "w7")
                self.record("W7", "raw", **{f"{n}_mib_s": size / MiB / r["seconds"]})
            return
        m, *_ = self.mount(name, read_cache=True)
        run(["cp", str(src), str(m / "w7.bin")])
        self.unmount(name, m)
        drop_caches()
        m, *_ = self.mount(name, read_cache=True)
        before = self.stats(m) if name == "sealfs" else None
        t1 = timed(["dd", f"if={m / 'w7.bin'}", "of=/dev/null", "bs=1M", "status=none"])
        mid = self.stats(m) if before else None
        t2 = timed(["dd", f"if={m / 'w7.bin'}", "of=/dev/null", "bs=1M", "status=none"])
        if before:
            self.requests.setdefault("W7 first read", self.delta(before, mid))
            self.requests.setdefault("W7 second read", self.delta(mid, self.stats(m)))
        self.unmount(name, m)
        self.record("W7", name, first_mib_s=size / MiB / t1, second_mib_s=size / MiB / t2)

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
            want = set((self.a.only or "W1,W2,W3,W4,W5,W7,W8,format").split(","))
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
                    if {"W3", "W8"} <= want:
                        log(f"W8 {n} (run {rep + 1}/{self.a.reps})")
                        self.w8(n, rep)
            for n in names:
                if "W4" in want:
                    log(f"W4 {n}: preparing {self.a.entries} entries")
                    self.w4_prepare(n)
                    if n == "sealfs":
                        # What LIST can vouch for has settled a second
                        # after the last write.
                        time.sleep(2.5)
                        self.w4(n, 0, system="sealfs (first listing: builds the index)")
                    for rep in range(self.a.reps):
                        self.w4(n, rep)
            for n in names:
                if "W5" in want:
                    log(f"W5 {n}")
                    self.w5_prepare(n)
                    self.w5(n)
            for n in names:
                if "W7" in want and n != "gocryptfs":
                    log(f"W7 {n}")
                    self.w7(n)
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
        return document(self)

