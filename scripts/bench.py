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

Every workload runs in two profiles: `local` (clients reach the servers
directly, well under a millisecond a request) and `aws` (every client, peers
included, reaches S3 and KMS through a TCP proxy that adds --rtt ms round
trips, 20 by default, as in a region). Results go to
bench/results/<date>.json and .md (and PNG charts with matplotlib).
Timings are medians of --reps runs; ratios compare medians of this one run. Every server and mount it starts is stopped by PID/unmounted,
also on failure.
"""

import argparse
import datetime
import json
import pathlib

from bench_lib.common import ROOT, log
from bench_lib.report import chart, markdown
from bench_lib.workloads import Bench


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, only sealfs and raw (CI)")
    ap.add_argument("--sealfs", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--systems", help="comma-separated subset")
    ap.add_argument("--reps", type=int)
    ap.add_argument("--only", help="comma-separated workloads (W1..W5, W7, W8 (needs W3), format)")
    ap.add_argument("--out", help="results directory (default bench/results; bench/work/quick for --quick)")
    ap.add_argument("--profiles", default="local,aws",
                    help="local (servers reached directly) and/or aws (through --rtt round trips)")
    ap.add_argument("--rtt", type=int, default=20, help="round trip of the aws profile, ms")
    ap.add_argument("--proxy", required=True, help="the delay proxy binary (examples/delay_proxy.rs)")
    a = ap.parse_args()
    q = a.quick
    a.reps = a.reps or (1 if q else 3)
    a.big_mib = 64 if q else 1024
    a.files = 200 if q else 2000
    a.entries = 1000 if q else 10000
    a.random_mib = 32 if q else 256
    a.random_seconds = 5 if q else 20
    a.random_count = 500 if q else 4000
    a.reread_mib = 64 if q else 1024
    out = pathlib.Path(a.out or (ROOT / "bench" / ("work/quick" if q else "results")))
    out.mkdir(parents=True, exist_ok=True)
    stem = datetime.date.today().isoformat() + ("-quick" if q else "")
    docs, md = {}, ""
    for profile in a.profiles.split(","):
        a.rtt_ms = 0 if profile == "local" else a.rtt
        log(f"profile {profile}" + (f" ({a.rtt_ms} ms round trips)" if a.rtt_ms else ""))
        doc = Bench(a).go()
        docs[profile] = doc
        part = markdown(doc).replace("# sealfs benchmark,", f"# sealfs benchmark ({profile}),", 1)
        png = f"{stem}.png" if profile == "local" else f"{stem}-{profile}.png"
        if not q and chart(doc, out / png):
            part += f"\n![chart]({png})\n"
        md += part + "\n"
    (out / f"{stem}.json").write_text(json.dumps({"profiles": docs}, indent=2) + "\n")
    (out / f"{stem}.md").write_text(md)
    print(md)
    log(f"results in {out / stem}.{{json,md}}")


if __name__ == "__main__":
    main()
