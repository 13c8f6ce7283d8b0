"""Bytes of weights a decoder reads per decoded token, from the model file itself.

    python weights_read.py onnx DECODER.onnx     (ours: BUNDLE/decoder.onnx; GenAI: model.onnx)
    python weights_read.py gguf MODEL.gguf       (llama.cpp; needs LLAMA_SRC for its gguf-py)

Prints one line of JSON: {"bytes_per_token": N, "total_bytes": N, "left_out_bytes": N,
"left_out": [names...]}.

The rule is the same for every format: every weight tensor of the decoder is read once per
decoded token (the int4 matrices with their scales and zero points, norms, a float lm_head),
except a table the step only gathers rows from (the token embedding, and in ONNX any
initializer whose only readers take rows of it, directly or through a Cast /
DequantizeLinear / Transpose / Reshape: Gather, GatherBlockQuantized, and the cos/sin
caches of RotaryEmbedding / GroupQueryAttention). Such a table is counted when the same
tensor is also read whole (GenAI's tied int4 lm_head that its embedding gathers from).

- ONNX: the initializers' sizes (external data `length`, else raw_data, else the typed
  fields); our bundle keeps the embedding table outside decoder.onnx
  (embed_tokens.safetensors), so there everything in decoder.onnx.data counts.
- GGUF: the tensors' byte sizes; token_embd.weight is left out when output.weight exists
  (untied); with tied embeddings it is the lm_head and counts.
The KV cache read per token is not included (the same for all three at a given context).
"""

import json
import os
import sys

# Inputs that an op reads only rows of, by position: gathers' data (and a quantized one's
# scales and zero points), and the cos/sin tables of the rotary-fused contrib ops.
GATHER_INPUTS = {"Gather": {0}, "GatherND": {0}, "GatherElements": {0},
                 "GatherBlockQuantized": {0, 2, 3}, "RotaryEmbedding": {2, 3},
                 "GroupQueryAttention": {7, 8}}
PASS = {"Cast", "DequantizeLinear", "Transpose", "Reshape", "Identity", "Unsqueeze", "Squeeze"}


def onnx_bytes(path):
    import onnx
    from onnx import helper

    m = onnx.load(path, load_external_data=False)
    sizes = {}
    for t in m.graph.initializer:
        ext = {e.key: e.value for e in t.external_data}
        if t.data_location == onnx.TensorProto.EXTERNAL and "length" in ext:
            n = int(ext["length"])
        elif t.raw_data:
            n = len(t.raw_data)
        else:
            count = 1
            for d in t.dims:
                count *= d
            np_dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
            bits = 4 if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4) else np_dtype.itemsize * 8
            n = (count * bits + 7) // 8
        sizes[t.name] = n

    consumers = {}

    def walk(graph):
        for node in graph.node:
            for i in node.input:
                consumers.setdefault(i, []).append(node)
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for g in a.graphs:
                    walk(g)

    walk(m.graph)

    memo = {}

    def gather_only(name, depth=0):
        if name in memo:
            return memo[name]
        users = consumers.get(name, [])
        ok = bool(users) and depth < 8
        for node in users:
            rows = GATHER_INPUTS.get(node.op_type, ())
            if any(node.input[k] == name for k in rows if k < len(node.input)) and \
                    all(node.input[k] != name for k in range(len(node.input)) if k not in rows):
                continue
            if node.op_type in PASS and all(gather_only(o, depth + 1) for o in node.output):
                continue
            ok = False
            break
        memo[name] = ok
        return ok

    left = sorted(n for n in sizes if gather_only(n))
    total = sum(sizes.values())
    left_bytes = sum(sizes[n] for n in left)
    return total, left_bytes, left


def gguf_bytes(path):
    src = os.environ.get("LLAMA_SRC")
    if src:
        sys.path.insert(0, os.path.join(src, "gguf-py"))
    from gguf import GGUFReader

    r = GGUFReader(path)
    sizes = {t.name: int(t.n_bytes) for t in r.tensors}
    left = ["token_embd.weight"] if "output.weight" in sizes and "token_embd.weight" in sizes else []
    total = sum(sizes.values())
    return total, sum(sizes[n] for n in left), left


def main():
    kind, path = sys.argv[1], sys.argv[2]
    total, left_bytes, left = (onnx_bytes if kind == "onnx" else gguf_bytes)(path)
    print(json.dumps({"bytes_per_token": total - left_bytes, "total_bytes": total,
                      "left_out_bytes": left_bytes, "left_out": left[:20]}))


if __name__ == "__main__":
    main()
