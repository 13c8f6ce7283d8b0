"""Records and tables for bench/cpu-vs-peers.sh (standard library only).

    report.py run ROUND ROW RUNNER_JSON TIME_V OTHERS LOADED TRIES   -> one JSON line (raw.jsonl)
    report.py probe ROUND PROBE_OUT OTHERS LOADED TRIES              -> one JSON line
    report.py export ROW TIME_V BYTES_JSON [EXTRA_TIME_V...] [--ort BYTES_JSON]
                                                                     -> one JSON line (exports.jsonl)
    report.py table WORK_DIR                                         -> the markdown table
    report.py last RAW_JSONL                                         -> the last run, in words

RUNNER_JSON is what the runner printed (`ove bench --json`, genai_bench.py, llama_bench.py);
TIME_V is /usr/bin/time -v's report (peak RSS = "Maximum resident set size", the largest
of the process and its children); OTHERS is the share of the machine's CPU time that other
processes used during the run; an export made of several steps (llama.cpp: convert then
quantize) adds their wall times and takes the largest peak RSS. --ort: the bytes of the
graph ONNX Runtime runs, when it is not the one tract runs (ours: decoder_ort.onnx).
"""

import json
import os
import statistics
import sys


def parse_time_v(path):
    wall = rss_kb = None
    for line in open(path):
        line = line.strip()
        if line.startswith("Elapsed (wall clock)"):
            v = line.rsplit(" ", 1)[1].split(":")
            wall = sum(float(x) * 60 ** i for i, x in enumerate(reversed(v)))
        elif line.startswith("Maximum resident set size"):
            rss_kb = int(line.rsplit(" ", 1)[1])
    return wall, rss_kb


def last_json(path):
    text = open(path).read()
    start = text.find("{")
    # ove prints pretty JSON; the helpers print one line (maybe after log lines).
    for i in range(len(text) - 1, -1, -1):
        if text[i] == "{":
            try:
                return json.loads(text[i:])
            except json.JSONDecodeError:
                continue
    return json.loads(text[start:])


def cmd_run(a):
    rnd, row, out, tv, others, loaded, tries = a
    j = last_json(out)
    wall, rss_kb = parse_time_v(tv)
    print(json.dumps({
        "round": int(rnd), "row": row,
        "prefill_tokens": j.get("prefill_tokens"), "decode_tokens": j.get("decode_tokens"),
        "prefill_tokens_per_s": j["prefill_tokens_per_s"],
        "decode_tokens_per_s": j["decode_tokens_per_s"],
        "peak_rss_mib": rss_kb / 1024 if rss_kb else j.get("peak_rss_mib"),
        "wall_s": wall, "others": float(others), "loaded": loaded == "1", "tries": int(tries),
        "backend": j.get("backend_detail") or j.get("backend"),
        "load_s": j["load_ms"] / 1000 if j.get("load_ms") is not None else None,
    }))


def cmd_probe(a):
    rnd, out, others, loaded, tries = a
    kv = dict(line.split(None, 1) for line in open(out) if line.strip())
    print(json.dumps({"round": int(rnd), "row": "probe", "read_gbs": float(kv["read_gbs"]),
                      "others": float(others), "loaded": loaded == "1", "tries": int(tries)}))


def cmd_export(a):
    ort = None
    if "--ort" in a:
        i = a.index("--ort")
        ort = json.loads(open(a[i + 1]).read())
        a = a[:i] + a[i + 2:]
    row, tv, bj, *more = a
    wall, rss_kb = parse_time_v(tv)
    for m in more:
        w, r = parse_time_v(m)
        wall += w
        rss_kb = max(rss_kb, r)
    b = json.loads(open(bj).read())
    print(json.dumps({"row": row, "export_s": wall, "export_rss_mib": rss_kb / 1024,
                      "bytes_per_token": b["bytes_per_token"], "model_bytes": b["total_bytes"],
                      "left_out": b["left_out"],
                      "bytes_per_token_ort": ort["bytes_per_token"] if ort else None}))


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


def cmd_table(a):
    work = a[0]
    meta = json.load(open(os.path.join(work, "meta.json")))
    lines = open(os.path.join(work, "rows.tsv")).read().splitlines()
    head = lines[0].split("\t")
    meta["rows"] = [dict(zip(head, line.split("\t"))) for line in lines[1:] if line]
    runs = read_jsonl(os.path.join(work, "raw.jsonl"))
    exports = {e["row"]: e for e in read_jsonl(os.path.join(work, "exports.jsonl"))}
    probes = [r for r in runs if r["row"] == "probe"]
    bw = statistics.median(p["read_gbs"] for p in probes) if probes else None
    bw_loaded = any(p["loaded"] for p in probes)
    out = []
    out.append(f"CPU decode/prefill, {meta['shape']} shape (random weights, the same for all), "
               f"{meta['prompt']}-token prompt, {meta['decode']} decoded tokens, "
               f"{meta['threads']} threads, median of {meta['rounds']} interleaved rounds; "
               f"{meta['cpu']}.")
    if bw:
        out.append(f"Read bandwidth (bench/cpu_peers/stream.c, {meta['threads']} threads, 1 GiB, "
                   f"median of rounds' best pass): {bw:.2f} GB/s{' (loaded)' if bw_loaded else ''}.")
    out.append("")
    out.append("| runner | weights | bytes/token | prefill tok/s | decode tok/s | decode GB/s "
               "| % of read bw | peak RSS | load | export | export RSS |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in meta["rows"]:
        name, model = row["label"], row["model"]
        rs = [r for r in runs if r["row"] == row["key"]]
        e = exports.get(row["export"], {})
        bpt = e.get("bytes_per_token")
        if row.get("run") == "ove:ort" and e.get("bytes_per_token_ort"):
            bpt = e["bytes_per_token_ort"]
        if not rs:
            out.append(f"| {name} | {model} | {fmt_mb(bpt)} | failed | failed | | | | | "
                       f"{fmt_s(e.get('export_s'))} | {fmt_mib(e.get('export_rss_mib'))} |")
            continue
        mark = " (loaded)" if any(r["loaded"] for r in rs) else ""
        pf = statistics.median(r["prefill_tokens_per_s"] for r in rs)
        dc = statistics.median(r["decode_tokens_per_s"] for r in rs)
        rss = statistics.median(r["peak_rss_mib"] for r in rs)
        loads = [r["load_s"] for r in rs if r.get("load_s") is not None]
        load = fmt_s(statistics.median(loads)) if loads else ""
        gbs = dc * bpt / 1e9 if bpt else None
        frac = f"{100 * gbs / bw:.0f}%" if gbs and bw else ""
        out.append(f"| {name} | {model} | {fmt_mb(bpt)} | {pf:.1f}{mark} | {dc:.2f}{mark} | "
                   f"{gbs:.2f} | {frac} | {fmt_mib(rss)} | {load} | {fmt_s(e.get('export_s'))} | "
                   f"{fmt_mib(e.get('export_rss_mib'))} |")
    out.append("")
    out.append("bytes/token: decoder weight bytes read per decoded token (bench/cpu_peers/"
               "weights_read.py: all weights but a gather-only token embedding; KV cache not "
               "counted). decode GB/s = decode tok/s x bytes/token; % of read bw = that over "
               "the probe's. peak RSS: /usr/bin/time -v of the benchmark process. load: the "
               "bundle's load time as `ove bench` reports it (both graphs, sessions or plans "
               "made). export: wall "
               "time (llama.cpp: convert_hf_to_gguf.py to bf16 + llama-quantize).")
    if any(r.get("loaded") for r in runs):
        out.append("(loaded): other processes used more than the threshold of the CPU during "
                   "at least one of that row's rounds, after the retries.")
    print("\n".join(out))


def cmd_last(a):
    j = json.loads(open(a[0]).read().splitlines()[-1])
    print(f"prefill {j['prefill_tokens_per_s']:.1f} tok/s, decode {j['decode_tokens_per_s']:.2f} "
          f"tok/s, peak RSS {j['peak_rss_mib']:.0f} MiB, others {100 * j['others']:.0f}% of the CPU"
          + (" (loaded)" if j["loaded"] else ""))


def fmt_mb(b):
    return f"{b / 1e6:.0f} MB" if b else ""


def fmt_mib(m):
    return f"{m:.0f} MiB" if m else ""


def fmt_s(s):
    return f"{s:.1f} s" if s is not None else ""


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"run": cmd_run, "probe": cmd_probe, "export": cmd_export, "table": cmd_table,
     "last": cmd_last}[cmd](args)


if __name__ == "__main__":
    main()
