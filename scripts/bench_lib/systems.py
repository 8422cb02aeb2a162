"""The systems under test: the servers they run on (SeaweedFS, moto), and how
each one is mounted, unmounted, fed and asked for its request counts."""

from bench_lib.common import *  # noqa: F401,F403  (helpers, constants, stdlib modules)


class Servers:
    """SeaweedFS (S3) and moto (KMS), on loopback, stopped by PID; with a
    round trip (`rtt_ms` > 0), every client reaches them through a delaying
    TCP proxy (examples/delay_proxy.rs), as it would reach S3 and KMS in a
    region."""

    def __init__(self, work, venv, proxy=None, rtt_ms=0):
        self.work, self.venv, self.procs = work, venv, []
        self.proxy, self.rtt_ms = proxy, rtt_ms

    def start(self):
        run(["ip", "link", "set", "lo", "up"])
        data = self.work / "weed"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        # Every run starts with empty buckets and a new KMS key: what the
        # systems cached locally in an earlier run belongs to neither.
        for stale in ("cache", "cache-wb", "rclone-cache"):
            shutil.rmtree(self.work / stale, ignore_errors=True)
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
        self.s3_url = f"http://127.0.0.1:{S3_PORT}"
        self.kms_url = f"http://127.0.0.1:{self.moto_port}"
        if self.rtt_ms:
            self.s3_url = self.delayed(S3_PORT, self.rtt_ms, "s3")
            self.kms_url = self.delayed(self.moto_port, self.rtt_ms, "kms")
        log(f"SeaweedFS on 127.0.0.1:{S3_PORT}, moto KMS on 127.0.0.1:{self.moto_port}"
            + (f"; clients reach them through {self.rtt_ms} ms round trips" if self.rtt_ms else ""))

    def delayed(self, port, rtt_ms, name):
        """Starts a delaying proxy to 127.0.0.1:`port`; returns its URL."""
        port_file = self.work / f"proxy-{name}-{rtt_ms}.port"
        port_file.unlink(missing_ok=True)
        self.procs.append(subprocess.Popen(
            [str(self.proxy), "--upstream", f"127.0.0.1:{port}", "--rtt-ms", str(rtt_ms),
             "--port-file", str(port_file)],
            stdout=open(self.work / f"proxy-{name}.log", "a"), stderr=subprocess.STDOUT,
            start_new_session=True))
        for _ in range(200):
            if port_file.exists():
                return f"http://127.0.0.1:{port_file.read_text().strip()}"
            time.sleep(0.05)
        raise RuntimeError(f"delay proxy for {name} did not start; see {self.work}")

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



class Systems:
    """Mounts and backends of every system, in one work directory."""

    def __init__(self, args):
        self.a = args
        self.work = ROOT / "bench" / "work"
        self.sealfs = pathlib.Path(args.sealfs).resolve()
        self.venv = pathlib.Path(args.venv)
        self.servers = Servers(self.work, self.venv, args.proxy, args.rtt_ms)
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
                  "AWS_ENDPOINT_URL": self.servers.kms_url,
                  "AWS_ENDPOINT_URL_S3": self.servers.s3_url})
        return e

    def raw(self, bucket, *op, s3_url=None):
        env = self.env()
        if s3_url:
            env["AWS_ENDPOINT_URL_S3"] = s3_url
        r = run([str(self.sealfs), "raw", bucket, *map(str, op)], env=env)
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

    def mount(self, name, write_back=False, read_cache=False, extra=()):
        """Mounts `name` (fresh process); returns (mountpoint, bucket, prefix, pid).
        `extra`: more arguments for a sealfs mount."""
        e = self.env()
        if name == "sealfs":
            m = self.mnt("sealfs-wb" if write_back else "sealfs")
            cache = self.work / ("cache-wb" if write_back else "cache")
            args = [str(self.sealfs), "mount", "s3://sealfs/vol", str(m), "--cache-dir", str(cache),
                    "--log-file", str(self.work / "sealfs.log")]
            if write_back:
                args.append("--write-back")
            args += os.environ.get("SEALFS_BENCH_EXTRA", "").split() + list(extra)
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
            # W7 compares read caches: rclone's VFS cache in full mode.
            subprocess.Popen(["rclone", "mount", "crypt:", str(m), "--vfs-cache-mode",
                              "full" if read_cache else "writes",
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
        run(["s3fs", bucket, str(m), "-o", f"url={self.servers.s3_url}", "-o", "use_path_request_style",
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
            "RCLONE_CONFIG_S3_ENDPOINT": self.servers.s3_url,
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

