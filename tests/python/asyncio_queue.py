# An asyncio program for checkpoint tests: producers and a consumer on an asyncio.Queue paced by
# timers (asyncio.sleep, call_later, wait_for timeouts), printing only what its logic decides,
# so an uninterrupted run and a migrated one print the same bytes.
import asyncio
import hashlib


async def producer(q, name, n, pause):
    for i in range(n):
        await asyncio.sleep(pause)
        await q.put((name, i))
    await q.put((name, None))


async def consumer(q, producers):
    # Each producer's items arrive in its order; how they interleave depends on timing, so
    # only per-producer digests and counts are printed.
    digests = {}
    done = 0
    count = 0
    while done < producers:
        try:
            name, i = await asyncio.wait_for(q.get(), timeout=5)
        except asyncio.TimeoutError:
            print("timed out waiting", flush=True)
            continue
        if i is None:
            done += 1
            continue
        count += 1
        digests.setdefault(name, hashlib.sha256()).update(b"%d," % i)
        if count % 10 == 0:
            print("consumed", count, "of 310", flush=True)
    return count, digests


async def main():
    loop = asyncio.get_running_loop()
    fired = loop.create_future()
    loop.call_later(1.5, fired.set_result, "late callback")
    q = asyncio.Queue(maxsize=8)
    tasks = [
        asyncio.create_task(producer(q, "a", 150, 0.01)),
        asyncio.create_task(producer(q, "b", 100, 0.02)),
        asyncio.create_task(producer(q, "c", 60, 0.04)),
    ]
    count, digests = await consumer(q, len(tasks))
    await asyncio.gather(*tasks)
    print(await fired, flush=True)
    for name in sorted(digests):
        print("producer", name, digests[name].hexdigest()[:16], flush=True)
    print("total", count, flush=True)


asyncio.run(main())
