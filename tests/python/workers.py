"""CPU work in 3 `threading` threads with a deterministic output.

Three long-lived worker threads each take tasks from a queue of their own and put results on
a queue of their own; the main thread hands out one task per worker per round and prints the
round's results in worker order, so the output never depends on scheduling.

usage: workers.py ROUNDS SIZE
"""
import queue
import sys
import threading

ROUNDS, SIZE = int(sys.argv[1]), int(sys.argv[2])


def task(worker, rnd):
    d = {}
    x = (rnd * 7919 + worker * 104729 + 1) & 0x7FFFFFFF
    for i in range(SIZE):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        k = x % 5003
        d[k] = (d.get(k, 0) * 31 + i) & 0xFFFFFFFF
    h = 0
    for k in sorted(d):
        h = (h * 1000003 + k * 7 + d[k]) & 0xFFFFFFFFFFFF
    return h


def work(worker, inbox, outbox):
    while True:
        rnd = inbox.get()
        if rnd is None:
            return
        outbox.put(task(worker, rnd))


inboxes = [queue.Queue() for _ in range(3)]
outboxes = [queue.Queue() for _ in range(3)]
threads = [
    threading.Thread(target=work, args=(w, inboxes[w], outboxes[w]), name="worker-%d" % w)
    for w in range(3)
]
for t in threads:
    t.start()
total = 0
for rnd in range(ROUNDS):
    for w in range(3):
        inboxes[w].put(rnd)
    results = [outboxes[w].get(timeout=120) for w in range(3)]
    total = (total * 31 + sum(results)) & 0xFFFFFFFFFFFF
    print("round", rnd, " ".join("%012x" % r for r in results), flush=True)
for w in range(3):
    inboxes[w].put(None)
for t in threads:
    t.join()
print("total %012x" % total, flush=True)
