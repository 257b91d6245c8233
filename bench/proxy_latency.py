"""Added latency of the wakeguard wake proxy: upstream sends `detection` -> satellite receives it.

Runs a Wyoming wake service (fires `detection` once per 2 s of audio after each `detect`)
and a client in this process (one clock), and `wakeguard serve` as a separate process.
Measures the same wake-ups directly (client -> wake service) and through the proxy; the
difference of medians is what the proxy adds (scoring the wake word included).

usage: .venv/bin/python bench/proxy_latency.py [BUNDLE] [N]   (default: the shipped bundle, 50)
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from wakeguard.edge.audio import load_audio
from wakeguard.edge.bundle import default_bundle_path
from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.server import AsyncEventHandler, AsyncTcpServer
from wyoming.wake import Detect, Detection

SPEECH = Path(__file__).resolve().parents[1].parent / "shared" / "speech" / "librispeech"

SENT: dict[int, float] = {}


class Wake(AsyncEventHandler):
    def __init__(self, r, w):
        super().__init__(r, w)
        self.count, self.armed, self.k = 0, True, 0

    async def handle_event(self, event):
        if Detect.is_type(event.type):
            self.count, self.armed = 0, True
        elif AudioChunk.is_type(event.type):
            c = AudioChunk.from_event(event)
            self.count += c.samples
            if self.armed and self.count >= 32000:
                self.armed = False
                SENT[c.timestamp] = time.perf_counter()
                await self.write_event(Detection(name="w", timestamp=c.timestamp).event())
        return True


async def wakeups(uri_port: int, audio: bytes, n: int) -> list[float]:
    client = AsyncTcpClient("127.0.0.1", uri_port, read_timeout=30)
    await client.connect()
    out = []
    ts = 0
    await client.write_event(AudioStart(rate=16000, width=2, channels=1, timestamp=0).event())
    for _ in range(n):
        await client.write_event(Detect(names=["w"]).event())
        for i in range(0, len(audio), 2048):
            await client.write_event(AudioChunk(rate=16000, width=2, channels=1, audio=audio[i : i + 2048], timestamp=ts).event())
            last = ts
            ts += 64
        ev = await client.read_event()
        got = time.perf_counter()
        assert ev is not None and ev.type == "detection", ev
        out.append((got - SENT[last]) * 1000)
    await client.disconnect()
    return out


def pct(x):
    a = np.asarray(x)
    return {"n": len(a), "p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3), "max": round(float(a.max()), 3)}


async def main(bundle: str, n: int) -> None:
    x = load_audio(sorted((SPEECH / "train-clean-100").glob("*.flac"))[0])[8000:40000]
    audio = np.clip(np.round(x * 32768), -32768, 32767).astype("<i2").tobytes()
    wake = AsyncTcpServer("127.0.0.1", 0)
    await wake.start(Wake)
    wport = wake._server.sockets[0].getsockname()[1]
    direct = await wakeups(wport, audio, n)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wakeguard.tools.cli", "serve", "--uri", "tcp://127.0.0.1:0",
        "--upstream", f"tcp://127.0.0.1:{wport}", "--model", bundle, "--operating-point", "bpcer_1pct",
        "--log", str(Path(tempfile.mkdtemp()) / "decisions.jsonl"), "--json", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    ready = json.loads(await proc.stdout.readline())
    pport = int(ready["uri"].rsplit(":", 1)[1])
    proxied = await wakeups(pport, audio, n)
    proc.terminate()
    out = (await proc.communicate())[0].decode().strip().splitlines()
    print("direct  (wake service -> client):", pct(direct))
    print("proxied (wake service -> proxy -> client):", pct(proxied))
    print("difference of medians (ms):", round(float(np.median(proxied) - np.median(direct)), 3))
    print("proxy's own measure (detection read -> forwarded):", out[-1])
    await wake.stop()


if __name__ == "__main__":
    model = sys.argv[1] if len(sys.argv) > 1 else str(default_bundle_path())
    asyncio.run(main(model, int(sys.argv[2]) if len(sys.argv) > 2 else 50))
