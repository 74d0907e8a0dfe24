#!/usr/bin/env python3
"""Where an agent plug's wait for ovs-vswitchd went, plug by plug.

Reads the files `BENCH_TRACE_DIR=DIR cargo bench -p overlay-tests --bench agent_bench -- plug`
keeps for a round (round-X-agent.log, round-X-vswitchd.log) and splits each plug's `vswitchd`
step (from the agent's OVSDB commit to seeing the port's ofport) into:
  blocked  until ovs-vswitchd's main loop began the pass that took the port (it was busy with
           a pass something else started: an OVSDB change or any link event in the namespace);
  walk     from that pass's start to its "added interface" line;
  after    from that line to the agent's reply (the rest of the pass, ovs-vswitchd's ofport
           write, ovsdb-server's update to the agent).
ovs-vswitchd logs in whole milliseconds, so each part is +-1 ms.

usage: scripts/plug-trace.py DIR [ROUND]     (ROUND: A, B or C; default B)
"""
import datetime
import re
import statistics
import sys


def ms(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    d, rnd = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "B")
    wakeups, added = [], {}
    for line in open(f"{d}/round-{rnd}-vswitchd.log", errors="replace"):
        f = line.split("|")
        # Main-thread lines only: other threads put their name in brackets after the module.
        if len(f) < 5 or "(" in f[2]:
            continue
        t = ms(f[0])
        if f[2] == "poll_loop":
            wakeups.append(t)
        m = re.search(r"added interface (\S+) on port", f[4])
        if m:
            added[m.group(1)] = t
    rows = []
    for line in open(f"{d}/round-{rnd}-agent.log", errors="replace"):
        if "container plugged" not in line:
            continue
        done = ms(line.split()[0])
        port = re.search(r"port=(\S+)", line).group(1)
        took = float(re.search(r'took_ms="([\d.]+)"', line).group(1))
        steps = dict((k, float(v)) for k, v in re.findall(r"([\w+]+):([\d.]+)", line.split("steps=")[1]))
        committed = done - steps["vswitchd"]
        at = added.get(port)
        if at is None:
            continue
        began = max([w for w in wakeups if w <= at], default=at)
        rows.append((took, steps["vswitchd"], max(began - committed, 0.0), at - began, done - at))
    if not rows:
        sys.exit(f"no plugs matched in {d} round {rnd}: was ovs-vswitchd's poll_loop at debug?")
    head = ("plug ms", "vswitchd", "blocked", "walk", "after")
    print(f"round {rnd}: {len(rows)} plugs; the 10 slowest, then medians and the slowest 10% (means)")
    print(" ".join(f"{h:>9}" for h in head))
    rows.sort()
    for r in rows[-10:]:
        print(" ".join(f"{x:9.1f}" for x in r))
    cols = list(zip(*rows))
    tail = rows[-max(len(rows) // 10, 1):]
    print("median   " + " ".join(f"{statistics.median(c):9.1f}" for c in cols[1:]))
    print("tail 10% " + " ".join(f"{statistics.mean(c):9.1f}" for c in list(zip(*tail))[1:]))


if __name__ == "__main__":
    main()
