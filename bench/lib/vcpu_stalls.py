#!/usr/bin/env python3
"""vCPU stall census: how much of the time a runnable thread did not run.

    python3 bench/lib/vcpu_stalls.py [SECONDS]      (default 3)

One busy process pinned to each CPU reads the monotonic clock in a loop for
SECONDS and counts the gaps between two reads: time in which that CPU ran
something else (the guest kernel's own work, another task) or nothing at all
(the hypervisor had descheduled the vCPU, which no guest counter shows: this
kind of VM reports no steal time). Run it on an otherwise idle machine; it
loads every core while it runs.

Prints one line for the bench scripts, then one readable line per CPU:

    STALLS secs=3 cpus=2 ge200us_pct=.. ge1ms_pct=0.78,0.32 ge1ms_n=85,32 ge5ms_n=4,3 max_ms=..

A request in flight on a CPU that stalls waits out the stall, so the share of
time in stalls of 1 ms or more is a floor under what fraction of requests can
be delayed by 1 ms or more, whatever serves them.
"""

import multiprocessing as mp
import os
import sys
import time

# Gap thresholds, ns.
THRESHOLDS = (200_000, 1_000_000, 5_000_000)


def probe(cpu, secs, out):
    os.sched_setaffinity(0, {cpu})
    clock = time.perf_counter_ns
    n = [0] * len(THRESHOLDS)
    total = [0] * len(THRESHOLDS)
    longest = 0
    start = prev = clock()
    end = start + int(secs * 1e9)
    while prev < end:
        now = clock()
        gap = now - prev
        prev = now
        if gap >= THRESHOLDS[0]:
            for i, t in enumerate(THRESHOLDS):
                if gap >= t:
                    n[i] += 1
                    total[i] += gap
            longest = max(longest, gap)
    out.put((cpu, prev - start, n, total, longest))


def main():
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    cpus = sorted(os.sched_getaffinity(0))
    q = mp.Queue()
    procs = [mp.Process(target=probe, args=(c, secs, q)) for c in cpus]
    for p in procs:
        p.start()
    rows = sorted(q.get() for _ in procs)
    for p in procs:
        p.join()

    def pct(i):
        return ",".join("%.2f" % (100.0 * r[3][i] / r[1]) for r in rows)

    def cnt(i):
        return ",".join(str(r[2][i]) for r in rows)

    print(
        "STALLS secs=%g cpus=%d ge200us_pct=%s ge1ms_pct=%s ge1ms_n=%s ge5ms_n=%s max_ms=%s"
        % (
            secs,
            len(rows),
            pct(0),
            pct(1),
            cnt(1),
            cnt(2),
            ",".join("%.1f" % (r[4] / 1e6) for r in rows),
        )
    )
    for cpu, wall, n, total, longest in rows:
        print(
            "  cpu %d: %.2f%% of %.1f s in gaps >= 1 ms (%d of them, %d >= 5 ms), "
            "%.2f%% in gaps >= 0.2 ms; longest %.1f ms"
            % (cpu, 100.0 * total[1] / wall, wall / 1e9, n[1], n[2],
               100.0 * total[0] / wall, longest / 1e6)
        )


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        # A reader that wanted only the first line (`| head -1`): point
        # stdout at /dev/null so that the exit's flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
