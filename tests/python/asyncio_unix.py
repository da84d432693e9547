# An asyncio program that serves itself over a unix socket, for checkpoint tests: a server
# listening on a socket file in a fresh temporary directory (or on an abstract name with
# --abstract), one client that keeps a single connection for the whole run and one that
# connects anew for each round. It prints only what its logic decides (a line per round of the
# second client, then digests of every answer), so an uninterrupted run and a migrated one
# print the same bytes.
import asyncio
import hashlib
import os
import shutil
import sys
import tempfile


async def serve(reader, writer):
    while line := await reader.readline():
        n = int(line)
        writer.write(b"%d\n" % (n * n + 1))
        await writer.drain()
    writer.close()


async def ask(reader, writer, n, digest):
    writer.write(b"%d\n" % n)
    await writer.drain()
    digest.update(await reader.readline())


async def steady(path, count, pause):
    digest = hashlib.sha256()
    reader, writer = await asyncio.open_unix_connection(path)
    for i in range(count):
        await ask(reader, writer, i, digest)
        await asyncio.sleep(pause)
    writer.close()
    await writer.wait_closed()
    return digest.hexdigest()


async def rounds(path, count, pause):
    digest = hashlib.sha256()
    for r in range(count):
        reader, writer = await asyncio.open_unix_connection(path)
        for i in range(5):
            await ask(reader, writer, 1000 + 5 * r + i, digest)
            await asyncio.sleep(pause)
        writer.close()
        await writer.wait_closed()
        print("round", r + 1, "of", count, flush=True)
    return digest.hexdigest()


async def main():
    scratch = None
    if "--abstract" in sys.argv:
        path = "\0mrun-asyncio-unix-%d" % os.getpid()
    else:
        scratch = tempfile.mkdtemp(prefix="mrun-asyncio-")
        path = os.path.join(scratch, "server.sock")
    server = await asyncio.start_unix_server(serve, path)
    async with server:
        kept, fresh = await asyncio.gather(steady(path, 250, 0.03), rounds(path, 60, 0.02))
    print("one connection:", kept, flush=True)
    print("a connection per round:", fresh, flush=True)
    if scratch:
        shutil.rmtree(scratch)


asyncio.run(main())
