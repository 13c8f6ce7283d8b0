"""Load on a running `ove serve`: N concurrent clients send a fixed number of chat requests
(the same image and prompt), and the figures are printed: throughput, latency p50/p95,
the share answered 429 (queue full), and every other error (there should be none).

    python bench/serve_load.py --url http://127.0.0.1:8080 --image examples/heldout-receipt.png \
        --clients 16 --requests 200 --max-tokens 32

The last line is `LOAD {json}` for scripts (bench/serve-load.sh, cli/tests/serve.rs). A 429
is not retried: it is counted, as a client with its own back-off would see it. Uses httpx
(installed with the openai client by scripts/setup).
"""

import argparse
import asyncio
import base64
import json
import time

import httpx


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--stream", action="store_true", help="stream each answer")
    a = ap.parse_args()

    uri = "data:image/png;base64," + base64.b64encode(open(a.image, "rb").read()).decode()
    body = {
        "model": "ove",
        "max_tokens": a.max_tokens,
        "temperature": 0,
        "stream": a.stream,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": uri}},
            {"type": "text", "text": "Read all the text in the image."}]}],
    }
    headers = {"Authorization": f"Bearer {a.api_key}"}
    todo = list(range(a.requests))
    lat, busy, errors, tokens = [], 0, [], 0
    limits = httpx.Limits(max_connections=a.clients, max_keepalive_connections=a.clients)

    async def client(http):
        nonlocal busy, tokens
        while todo:
            todo.pop()
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{a.url}/v1/chat/completions", json=body, headers=headers)
                if r.status_code == 200:
                    lat.append(time.perf_counter() - t0)
                    if not a.stream:
                        tokens += r.json()["usage"]["completion_tokens"]
                elif r.status_code == 429 and "retry-after" in r.headers:
                    busy += 1
                else:
                    errors.append(f"{r.status_code} {r.text[:200]}")
            except Exception as e:  # a dropped connection is an error too
                errors.append(repr(e))

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(a.clients)))
    wall = time.perf_counter() - t0
    figures = {
        "clients": a.clients,
        "requests": a.requests,
        "ok": len(lat),
        "busy_429": busy,
        "busy_share": round(busy / a.requests, 3),
        "other_errors": len(errors),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(lat) / wall, 2),
        "completion_tokens_per_s": round(tokens / wall, 1) if not a.stream else None,
        "p50_s": round(pct(lat, 50), 3) if lat else None,
        "p95_s": round(pct(lat, 95), 3) if lat else None,
    }
    for e in errors[:5]:
        print(f"error: {e}")
    print(f"{a.clients} clients, {a.requests} requests in {wall:.2f} s: {len(lat)} answered "
          f"({figures['requests_per_s']}/s, p50 {figures['p50_s']} s, p95 {figures['p95_s']} s), "
          f"{busy} busy (429), {len(errors)} other errors")
    print("LOAD " + json.dumps(figures))
    raise SystemExit(1 if errors else 0)


if __name__ == "__main__":
    asyncio.run(main())
