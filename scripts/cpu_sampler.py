#!/usr/bin/env python3
"""Who uses the CPU while a benchmark runs: every INTERVAL seconds, the cores
each process name used since the last sample, from /proc (threads counted
with their process; FUSE threads under their process name), and the
machine's busy cores as TOTAL.

    scripts/cpu_sampler.py OUT [INTERVAL]      # one line per sample:
    <unix time> TOTAL=1.84 cp=0.11 sealfs=0.77 weed=0.95 ...

PERFORMANCE.md's limits are measured with it (start it beside
scripts/bench, stop it with a signal)."""
import os
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def processes():
    """pid -> (name, CPU seconds so far)."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1:s.rindex(")")]
        fields = s[s.rindex(")") + 2:].split()
        out[int(p)] = (name, (int(fields[11]) + int(fields[12])) / HZ)
    return out


def busy():
    with open("/proc/stat") as f:
        v = list(map(int, f.readline().split()[1:]))
    return (sum(v) - v[3] - v[4]) / HZ


def main():
    out = open(sys.argv[1], "w")
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.25
    prev, prev_busy, prev_t = processes(), busy(), time.monotonic()
    while True:
        time.sleep(interval)
        cur, cur_busy, now = processes(), busy(), time.monotonic()
        dt = now - prev_t
        by = {}
        for pid, (name, cpu) in cur.items():
            # A process born since the last sample used all its CPU in it.
            used = cpu - prev[pid][1] if pid in prev else cpu
            if name.startswith("kworker"):
                name = "kworker"
            by[name] = by.get(name, 0.0) + used
        by["TOTAL"] = cur_busy - prev_busy
        cols = " ".join(f"{n}={c / dt:.2f}" for n, c in sorted(by.items()) if c / dt >= 0.01)
        out.write(f"{time.time():.2f} {cols}\n")
        out.flush()
        prev, prev_busy, prev_t = cur, cur_busy, now


if __name__ == "__main__":
    main()
