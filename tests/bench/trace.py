#!/usr/bin/python3
"""Takes one cold start apart from the trace lazyroot writes when $LAZYROOT_TRACE names a file
(cache/base/trace.h: one JSON line per FUSE request, fetch call, Range stream, chunk and HTTP
exchange, CLOCK_MONOTONIC microseconds).

    LAZYROOT_TRACE=/tmp/t.jsonl lazyroot mount REF DIR ...; <start something>; lazyroot umount DIR
    tests/bench/trace.py /tmp/t.jsonl [--json] [--requests]

A harness may add its own marks to the same file, on the same clock (Python's time.monotonic()
is CLOCK_MONOTONIC): {"ev": "mark", "what": "cmd-start" | "cmd-end", "t": MICROSECONDS}.

Prints:
  mount phase     from `lazyroot mount` starting to the daemon's "ready": every HTTP request
                  (start, first byte, end relative to the start; bytes; new or reused
                  connection), which request each one waited for (the last one to end before it
                  started, if any) and the longest chain of requests one after the other
                  (sequential round trips)
  on-demand phase after "ready": FUSE requests, reads and how many waited for a fetch, fetch
                  calls, HTTP requests, bytes, the sequential round trips, and bytes fetched but
                  never read (chunks no read used: fetch-ahead and read-around that missed)
  time            wall time, the time some HTTP request was in flight (link), the time some
                  read waited for a fetch, the mount command's CPU time (the pull, indexing
                  the TOCs), the daemon's (at its exit) and its CPU per MB fetched, and the
                  command (between the cmd marks) if the harness marked it
"""

import argparse
import json
import sys


def load(path):
    events = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass   # a line cut by a crash: the rest still counts
    return events


def union_us(spans):
    """Microseconds covered by at least one of the (start, end) spans."""
    total, cur_s, cur_e = 0, None, None
    for s, e in sorted(spans):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


def chain(spans):
    """Length of the longest chain of spans each starting after the previous one ended, and
    for each span (in the order given) the index of the span it waited for, or None."""
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    best, after = {}, {}
    for i in order:
        start = spans[i][0]
        before = [j for j in order if spans[j][1] <= start and j in best]
        after[i] = max(before, key=lambda j: spans[j][1]) if before else None
        best[i] = 1 + max((best[j] for j in before), default=0)
    return max(best.values(), default=0), after


def mark(events, what, pick=min):
    ts = [e["t"] for e in events if e["ev"] == "mark" and e.get("what") == what]
    return pick(ts) if ts else None


def url_tail(e):
    path = e["url"].split("://", 1)[-1]
    path = path[path.find("/"):] if "/" in path else path
    for key in ("/blobs/", "/manifests/"):
        if key in path:
            head, ref = path.split(key, 1)
            return key.strip("/") + "/" + (ref[7:19] if ref.startswith("sha256:") else ref)
    return path


def analyse(events):
    start = mark(events, "start") or min(e.get("t0", e.get("t", 0)) for e in events)
    ready = mark(events, "ready")
    http = [e for e in events if e["ev"] == "http"]
    mount_http = [e for e in http if ready is None or e["t0"] < ready]
    demand_http = [e for e in http if ready is not None and e["t0"] >= ready]
    res = {"start_us": start, "ready_s": (ready - start) / 1e6 if ready else None}

    spans = [(e["t0"], e["t1"]) for e in mount_http]
    n_seq, waited = chain(spans)
    res["mount"] = {
        "requests": len(mount_http), "sequential_round_trips": n_seq,
        "bytes": sum(e["bytes"] for e in mount_http),
        "new_connections": sum(1 for e in mount_http if e["new_conn"]),
        "list": [{"i": i, "what": "%s %s" % (e["method"], url_tail(e)), "range": e["range"],
                  "start_ms": (e["t0"] - start) / 1e3,
                  "first_ms": ((e["first"] or e["t1"]) - start) / 1e3,
                  "end_ms": (e["t1"] - start) / 1e3, "bytes": e["bytes"],
                  "conn": "new" if e["new_conn"] else "reused", "after": waited[i],
                  "status": e["status"]}
                 for i, e in enumerate(mount_http)],
        # the mount's own work on the way to ready: TOCs fetched and parsed, entries
        # committed, the tree built (lazyroot's "step" lines; none from older builds)
        "steps": [{"what": e["what"], "object": e["object"][7:19] if e["object"].startswith(
                       "sha256:") else e["object"][:12], "n": e["n"],
                   "start_ms": (e["t0"] - start) / 1e3, "end_ms": (e["t1"] - start) / 1e3}
                  for e in sorted((e for e in events if e["ev"] == "step"),
                                  key=lambda e: e["t0"])],
    }

    fuse = [e for e in events if e["ev"] == "fuse" and (ready is None or e["t0"] >= ready)]
    reads = [e for e in fuse if e["op"] == "read"]
    ensures = [e for e in events if e["ev"] == "ensure"]
    waited_reads = {(e["pid"], e["op"]) for e in ensures if e["missing"] > 0 and e["op"]}
    chunks = [e for e in events if e["ev"] == "chunk" and e["r"] >= 0]
    used = set()
    for e in events:
        if e["ev"] == "span":
            used.update(e["chunks"])
    unread = [c for c in chunks if "%d:%d" % (c["layer"], c["off"]) not in used]
    d_spans = [(e["t0"], e["t1"]) for e in demand_http]
    d_seq, _ = chain(d_spans)
    res["demand"] = {
        "fuse_requests": len(fuse), "reads": len(reads),
        "reads_waiting": sum(1 for e in reads if (e["pid"], e["id"]) in waited_reads),
        "fetch_calls": len({(e["pid"], e["call"]) for e in ensures if e["mine"] > 0}),
        "requests": len(demand_http), "sequential_round_trips": d_seq,
        "bytes": sum(e["bytes"] for e in demand_http),
        "chunks_fetched": len(chunks), "chunks_never_read": len(unread),
        "bytes_never_read": sum(c["clen"] for c in unread),
        "bytes_fetched_ahead": sum(c["clen"] for c in chunks if c["ahead"]),
    }

    last = mark(events, "cmd-end", max) or max(e["t1"] for e in events if "t1" in e)
    verbs = {e["pid"]: e["verb"] for e in events if e["ev"] == "mark" and e.get("what") == "start"}
    exits = [e for e in events if e["ev"] == "mark" and e.get("what") == "exit"]
    # The daemon is the process that started no verb (forked by mount, its CPU counted anew).
    cpu_of = lambda pick: sum(e["utime_us"] + e["stime_us"] for e in exits if pick(e)) / 1e6
    cpu = cpu_of(lambda e: e["pid"] not in verbs) if exits else None
    mount_cpu = cpu_of(lambda e: verbs.get(e["pid"]) == "mount") if exits else None
    fetched_mb = sum(e["bytes"] for e in http) / 1e6
    res["time"] = {
        "wall_s": (last - start) / 1e6,
        "link_busy_s": union_us([(e["t0"], e["t1"]) for e in http]) / 1e6,
        "reads_waiting_s": union_us([(e["t0"], e["t1"]) for e in ensures if e["missing"]]) / 1e6,
        "daemon_cpu_s": cpu,
        "mount_command_cpu_s": mount_cpu,
        "daemon_cpu_s_per_mb": cpu / fetched_mb if cpu is not None and fetched_mb > 0 else None,
    }
    c0, c1 = mark(events, "cmd-start"), mark(events, "cmd-end", max)
    if c0 and c1:
        res["time"]["command_s"] = (c1 - c0) / 1e6
    return res


def show(res, requests):
    m, d, t = res["mount"], res["demand"], res["time"]
    print("mount phase: %s s to ready, %d requests (%d on new connections), %d bytes, "
          "%d sequential round trips" % ("%.3f" % res["ready_s"] if res["ready_s"] else "?",
                                         m["requests"], m["new_connections"], m["bytes"],
                                         m["sequential_round_trips"]))
    if requests or m["requests"] <= 40:
        print("  %3s %-34s %-20s %8s %8s %8s %9s %-6s %s" % (
            "#", "request", "range", "start", "1st byte", "end", "bytes", "conn", "after"))
        for r in m["list"]:
            print("  %3d %-34s %-20s %8.1f %8.1f %8.1f %9d %-6s %s" % (
                r["i"], r["what"][:34], r["range"][:20], r["start_ms"], r["first_ms"],
                r["end_ms"], r["bytes"], r["conn"], "-" if r["after"] is None else
                "#%d" % r["after"]))
    for s in m["steps"]:
        print("  step %-6s %-12s %6d entries  %8.1f .. %8.1f ms" % (
            s["what"], s["object"], s["n"], s["start_ms"], s["end_ms"]))
    print("on-demand phase: %d FUSE requests, %d reads (%d waited for a fetch), %d fetch calls, "
          "%d requests, %d bytes, %d sequential round trips" % (
              d["fuse_requests"], d["reads"], d["reads_waiting"], d["fetch_calls"], d["requests"],
              d["bytes"], d["sequential_round_trips"]))
    print("  chunks fetched %d, never read %d (%d bytes fetched but not needed); %d bytes "
          "fetched ahead (read-around, fetch-ahead)" % (
              d["chunks_fetched"], d["chunks_never_read"], d["bytes_never_read"],
              d["bytes_fetched_ahead"]))
    line = "time: wall %.3f s, link busy %.3f s, reads waiting %.3f s" % (
        t["wall_s"], t["link_busy_s"], t["reads_waiting_s"])
    if t["mount_command_cpu_s"]:
        line += ", mount command CPU %.3f s" % t["mount_command_cpu_s"]
    if t["daemon_cpu_s"] is not None:
        line += ", daemon CPU %.3f s" % t["daemon_cpu_s"]
        if t["daemon_cpu_s_per_mb"] is not None:
            line += " (%.4f s per MB fetched)" % t["daemon_cpu_s_per_mb"]
    if "command_s" in t:
        line += ", command %.3f s" % t["command_s"]
    print(line)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--json", action="store_true", help="print the breakdown as JSON")
    ap.add_argument("--requests", action="store_true", help="list every mount request")
    a = ap.parse_args(argv)
    events = load(a.trace)
    if not events:
        sys.exit("trace.py: no events in %s" % a.trace)
    res = analyse(events)
    if a.json:
        json.dump(res, sys.stdout, indent=1)
        print()
    else:
        show(res, a.requests)


if __name__ == "__main__":
    main()
