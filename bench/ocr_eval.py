#!/usr/bin/env python3
"""Helpers of bench/ocr-eval.sh (see its header): pick the paragraph set, run Tesseract and
RapidOCR image by image with wall times, and score every reader the same way.

  ocr_eval.py pick DIR OUT N MIN MAX        first N images of DIR with MIN..MAX text lines
  ocr_eval.py tesseract DATA OUT PSM        OUT/NAME.pred.txt + OUT/times.json
  ocr_eval.py rapidocr DATA OUT single|multi DET_SIDE   (with the .venv's python)
  ocr_eval.py ove-times EVAL_JSON OUT       times.json from `ove eval --json`'s per-image seconds
  ocr_eval.py table WORK OVE SETS READERS   the markdown table (scores via `ove eval --predictions`)

Scoring: reference and prediction both go through norm_lines (each line's whitespace runs
collapsed to one space and the line stripped, blank lines dropped), then `ove eval --data
--predictions --json` scores them with ove-core's metrics (CER: character Levenshtein over
the whole text, newlines included, summed over images / reference characters; WER: the same
over whitespace-split words). Exact: the whole text equal after " ".join(text.split()).
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def names(data):
    return sorted(p.stem for p in Path(data).glob("*.png") if (p.with_suffix(".txt")).is_file())


def norm_lines(text):
    lines = (" ".join(l.split()) for l in text.replace("\f", "\n").splitlines())
    return "\n".join(l for l in lines if l)


def norm_exact(text):
    return " ".join(text.split())


def write_times(out, times):
    Path(out, "times.json").write_text(json.dumps(times, indent=0))


def pick(src, out, n, lo, hi):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kept = 0
    for name in names(src):
        lines = [l for l in Path(src, name + ".txt").read_text().splitlines() if l.strip()]
        if lo <= len(lines) <= hi:
            for f in Path(src).glob(name + ".*"):
                shutil.copy(f, out / f.name)
            kept += 1
            if kept == n:
                break
    if kept < n:
        print(f"ocr-eval: only {kept} of {n} paragraphs have {lo}-{hi} lines", file=sys.stderr)


def tesseract(data, out, psm):
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    times = {}
    for name in names(data):
        t = time.perf_counter()
        r = subprocess.run(["tesseract", str(Path(data, name + ".png")), "stdout", "--psm", psm,
                            "-l", "eng"], capture_output=True, text=True, env=env)
        times[name] = time.perf_counter() - t
        Path(out, name + ".pred.txt").write_text(r.stdout if r.returncode == 0 else "")
    write_times(out, times)


def reading_order(boxes, txts):
    """RapidOCR's boxes (4 corner points each) into lines: top to bottom, a box joins the
    line it overlaps vertically by at least half its height; left to right within a line."""
    items = []
    for box, txt in zip(boxes, txts):
        ys = [p[1] for p in box]
        xs = [p[0] for p in box]
        items.append((min(ys), max(ys), min(xs), txt))
    items.sort(key=lambda it: ((it[0] + it[1]) / 2, it[2]))
    lines = []  # [top, bottom, [(left, txt)]]
    for top, bottom, left, txt in items:
        h = max(bottom - top, 1e-6)
        for line in lines:
            overlap = min(bottom, line[1]) - max(top, line[0])
            if overlap >= 0.5 * min(h, line[1] - line[0]):
                line[0], line[1] = min(top, line[0]), max(bottom, line[1])
                line[2].append((left, txt))
                break
        else:
            lines.append([top, bottom, [(left, txt)]])
    lines.sort(key=lambda l: l[0])
    return [" ".join(t for _, t in sorted(l[2], key=lambda x: x[0])) for l in lines]


def rapidocr(data, out, kind, det_side):
    from rapidocr import RapidOCR

    os.makedirs(out, exist_ok=True)
    engine = RapidOCR(params={
        "EngineConfig.onnxruntime.intra_op_num_threads": 1,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        "Global.log_level": "error",
        # Detection and recognition only: the 180-degree line classifier turned upright
        # lines over and read them as garbage (3 of 20 paragraphs in a first run), and
        # Tesseract is not asked to find orientation either.
        "Global.use_cls": False,
        # The detector's input: the short side scaled to at least det_side pixels (RapidOCR's
        # own default is 736, which makes a 60-pixel line a 736 x 4000+ image: seconds a line).
        "Det.limit_type": "min",
        "Det.limit_side_len": int(det_side),
    })
    all_names = names(data)
    engine(str(Path(data, all_names[0] + ".png")))  # untimed: loads the three models
    times = {}
    for name in all_names:
        t = time.perf_counter()
        r = engine(str(Path(data, name + ".png")))
        times[name] = time.perf_counter() - t
        lines = [] if r.boxes is None or r.txts is None else reading_order(r.boxes, r.txts)
        text = " ".join(lines) if kind == "single" else "\n".join(lines)
        Path(out, name + ".pred.txt").write_text(text)
    write_times(out, times)


def ove_times(eval_json, out):
    j = json.loads(Path(eval_json).read_text())
    write_times(out, {im["name"]: im.get("seconds", 0.0) for im in j["images"]})


def score(ove, work, set_name, reader):
    """(cer, wer, exact, n, seconds per image) or None when the reader has no output."""
    data = Path(work, set_name, "data")
    preds = Path(work, set_name, reader)
    if not Path(preds, "times.json").is_file():
        return None
    ref_dir = Path(work, set_name, "score", "ref")
    pred_dir = Path(work, set_name, "score", reader)
    for d in (ref_dir, pred_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    exact = 0
    all_names = names(data)
    for name in all_names:
        ref = Path(data, name + ".txt").read_text()
        p = Path(preds, name + ".pred.txt")
        pred = p.read_text() if p.is_file() else ""
        os.symlink(Path(data, name + ".png").resolve(), ref_dir / (name + ".png"))
        Path(ref_dir, name + ".txt").write_text(norm_lines(ref))
        Path(pred_dir, name + ".pred.txt").write_text(norm_lines(pred))
        exact += norm_exact(ref) == norm_exact(pred)
    r = subprocess.run([ove, "eval", "--data", str(ref_dir), "--predictions", str(pred_dir),
                        "--json"], capture_output=True, text=True)
    if not r.stdout.strip():
        sys.exit(f"ocr-eval: ove eval --predictions failed: {r.stderr}")
    total = json.loads(r.stdout)["total"]
    times = json.loads(Path(preds, "times.json").read_text())
    n = len(all_names)
    secs = sum(times.get(k, 0.0) for k in all_names) / max(n, 1)
    return total["cer"], total["wer"], exact, n, secs


def table(work, ove, sets, readers):
    labels = {
        "lines-clean": "single lines, clean",
        "lines-degraded": "single lines, degraded",
        "paragraphs": "paragraphs (3-5 lines)",
        "receipts": "receipts",
        "ove-int4": "ove int4",
        "ove-int4-1": "ove int4, 1 reading a line",
        "ove-int4-all": "ove int4, every line voted",
        "ove-f32": "ove f32",
        "tesseract": "Tesseract 5",
        "rapidocr": "RapidOCR 3.10",
    }
    print("| set | reader | CER | WER | exact | s/image |")
    print("|---|---|---|---|---|---|")
    for s in sets.split(","):
        for reader in readers.split(","):
            res = score(ove, work, s, reader)
            name = f"| {labels.get(s, s)} | {labels.get(reader, reader)} |"
            if res is None:
                print(f"{name} not available | | | |")
                continue
            cer, wer, exact, n, secs = res
            print(f"{name} {100 * cer:.2f}% | {100 * wer:.2f}% | {exact}/{n} "
                  f"({100 * exact / max(n, 1):.0f}%) | {secs:.3f} |")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "pick":
        pick(args[0], args[1], int(args[2]), int(args[3]), int(args[4]))
    elif cmd == "tesseract":
        tesseract(*args)
    elif cmd == "rapidocr":
        rapidocr(*args)
    elif cmd == "ove-times":
        ove_times(*args)
    elif cmd == "table":
        table(*args)
    else:
        sys.exit(f"ocr_eval.py: unknown command {cmd}")
