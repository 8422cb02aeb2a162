"""The report: medians, the ratios the targets are stated in, the machine and
versions, and the Markdown and chart renderings."""

from bench_lib.common import *  # noqa: F401,F403


def document(b):
    """The results document of a finished run of `b` (a Bench)."""
    summary = {}
    for w, systems in b.results.items():
        if w in ("format", "proxy check"):
            summary[w] = systems
            continue
        summary[w] = {s: {k: median(v) for k, v in vals.items()} for s, vals in systems.items()}
    ratios = ratios_of(summary)
    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if b.a.quick else "full",
        "rtt_ms": b.a.rtt_ms,
        "machine": machine(),
        "versions": versions(b.sealfs, b.venv),
        "parameters": {"reps": b.a.reps, "big_mib": b.a.big_mib, "files": b.a.files,
                       "entries": b.a.entries, "random_mib": b.a.random_mib,
                       "random_seconds": b.a.random_seconds, "reread_mib": b.a.reread_mib},
        "medians": summary,
        "runs": b.results,
        "sealfs_requests": b.requests,
        "ratios": ratios,
        "notes": b.notes,
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
    """The targets, as measured ratios (None where a system was not run)."""
    def get(w, sys_, k):
        return s.get(w, {}).get(sys_, {}).get(k)

    def ratio(a, b):
        return round(a / b, 3) if a and b else None


    r = {
        "W2 read vs raw GET": ratio(get("W2", "sealfs", "mib_s"), get("W2", "raw", "mib_s")),
        "W2 read vs rclone crypt": ratio(get("W2", "sealfs", "mib_s"), get("W2", "rclone", "mib_s")),
        "W2 read, read cache off, vs raw GET": ratio(get("W2", "sealfs --cache-size 0", "mib_s"),
                                                     get("W2", "raw", "mib_s")),
        "W1 write vs raw PUT": ratio(get("W1", "sealfs", "mib_s"), get("W1", "raw", "mib_s")),
        "W1 write vs rclone crypt": ratio(get("W1", "sealfs", "mib_s"), get("W1", "rclone", "mib_s")),
        "W3 default vs s3fs": ratio(get("W3", "sealfs", "files_s"), get("W3", "s3fs", "files_s")),
        # One branch key serves up to 10,000 new files: the calls do not grow with W3's size.
        "W3 KMS calls": get("W3", "sealfs", "kms_calls"),
        "W3 write-back vs raw 8x PUT": ratio(get("W3", "sealfs --write-back", "files_s"),
                                             get("W3", "raw (8 concurrent PUT)", "files_s")),
        "W3 write-back vs rclone crypt": ratio(get("W3", "sealfs --write-back", "files_s"),
                                               get("W3", "rclone", "files_s")),
        "W4 speed vs rclone crypt": ratio(get("W4", "rclone", "seconds"), get("W4", "sealfs", "seconds")),
        "W4 speed vs s3fs": ratio(get("W4", "s3fs", "seconds"), get("W4", "sealfs", "seconds")),
        "W4 time vs raw LIST": ratio(get("W4", "sealfs", "seconds"), get("W4", "raw (LIST only)", "seconds")),
        "W5 IOPS vs rclone crypt": ratio(get("W5", "sealfs", "iops"), get("W5", "rclone", "iops")),
        "W5 IOPS vs raw GET": ratio(get("W5", "sealfs", "iops"), get("W5", "raw", "iops")),
        "W5 IOPS vs s3fs": ratio(get("W5", "sealfs", "iops"), get("W5", "s3fs", "iops")),
        "W6 peak RSS MiB": get("W6", "sealfs", "peak_rss_mib"),
        "W7 second read vs raw GET": ratio(get("W7", "sealfs", "second_mib_s"), get("W7", "raw", "second_mib_s")),
        "W7 second read vs rclone crypt (VFS cache full)": ratio(get("W7", "sealfs", "second_mib_s"),
                                                                 get("W7", "rclone", "second_mib_s")),
        "W8 tar c vs raw GET": ratio(get("W8", "sealfs", "files_s"),
                                     get("W8", "raw (LIST, GET one at a time)", "files_s")),
        "W8 tar c vs s3fs": ratio(get("W8", "sealfs", "files_s"), get("W8", "s3fs", "files_s")),
        "W8 KMS calls": get("W8", "sealfs", "kms_calls"),
    }
    fmt = s.get("format", {})
    for k in ("format/seal", "format/open"):
        if f"{k}/65536" in fmt:  # the default 64 KiB segments
            r[f"{k} vs openssl"] = fmt[f"{k}/65536"]["x_openssl"]
    return r


TARGETS = {
    "W2 read vs raw GET": (">=", 0.9), "W2 read vs rclone crypt": (">=", 2),
    "W1 write vs raw PUT": (">=", 0.9), "W1 write vs rclone crypt": (">=", 2),
    "W3 KMS calls": ("<=", 2), "W4 time vs raw LIST": ("<=", 3),
    "W8 tar c vs raw GET": (">=", 0.8), "W8 tar c vs s3fs": (">=", 1), "W8 KMS calls": ("<=", 2),
    "W3 default vs s3fs": (">=", 3), "W3 write-back vs raw 8x PUT": (">=", 0.9),
    "W3 write-back vs rclone crypt": (">", 1), "W4 speed vs rclone crypt": (">", 1),
    "W4 speed vs s3fs": (">=", 3), "W5 IOPS vs rclone crypt": (">=", 2),
    "W5 IOPS vs s3fs": (">=", 1), "W7 second read vs raw GET": (">=", 5),
    "W7 second read vs rclone crypt (VFS cache full)": (">=", 1),
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
             f"Backend: SeaweedFS {doc['versions']['seaweedfs'] or ''} on 127.0.0.1, KMS: moto"
             + (f", every client reaching both through a TCP proxy that adds a {doc['rtt_ms']} ms round trip"
                if doc.get("rtt_ms") else ", reached directly (well under 1 ms a request)")
             + f". Medians of {doc['parameters']['reps']} runs.", ""]
    p = doc["parameters"]
    rows = [
        ("W1 write", f"{p['big_mib']} MiB dd bs=1M conv=fsync, until complete in S3", "W1", "mib_s", "MiB/s"),
        ("W2 read", "cold sequential read after remount", "W2", "mib_s", "MiB/s"),
        ("W3 copy", f"cp -r of {p['files']} x 4 KiB, until all in S3", "W3", "files_s", "files/s"),
        ("W4 ls -l", f"{p['entries']} entries, cold", "W4", "seconds", "s"),
        ("W5 random read", f"fio 4 KiB randread in {p['random_mib']} MiB read once before", "W5", "iops", "IOPS"),
        ("W6 peak RSS", "filesystem process during W1/W2", "W6", "peak_rss_mib", "MiB"),
        ("W7 first read", f"{p.get('reread_mib', '?')} MiB after a remount", "W7", "first_mib_s", "MiB/s"),
        ("W7 second read", "the same file again, same mount", "W7", "second_mib_s", "MiB/s"),
        ("W8 tar c", f"cold tar of W3's {p['files']} files after a remount", "W8", "files_s", "files/s"),
    ]
    systems = []
    for w in ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8"):
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
    check = m.get("proxy check")
    if check:
        lines += ["", "Proxy check (what the delaying proxy alone costs a client; above it, "
                  "aws-profile throughput is the proxy's): " + ", ".join(
                      f"{k} {v}" for k, v in check.items()) + "."]
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
              ("W5 random 4K IOPS", "W5", "iops"), ("W6 peak RSS MiB (lower is better)", "W6", "peak_rss_mib"),
              ("W7 second read MiB/s", "W7", "second_mib_s"), ("W8 cold tar c files/s", "W8", "files_s")]
    fig, axes = plt.subplots(2, 4, figsize=(20, 8))
    for ax, (title, w, k) in zip(axes.flat, panels):
        data = [(s, v.get(k)) for s, v in m.get(w, {}).items() if v.get(k) is not None]
        ax.barh([d[0] for d in data], [d[1] for d in data],
                color=["#2a7" if d[0].startswith("sealfs") else "#888" for d in data])
        ax.set_title(title)
        ax.invert_yaxis()
        for i, (_, val) in enumerate(data):
            ax.text(val, i, f" {val:.0f}" if val >= 10 else f" {val:.2f}", va="center", fontsize=8)
    rtt = f", {doc['rtt_ms']} ms round trips" if doc.get("rtt_ms") else ", local"
    fig.suptitle(f"sealfs vs raw S3 and peers on SeaweedFS — {doc['date'][:10]}, "
                 f"{doc['machine']['cpus']} cores{rtt}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True

