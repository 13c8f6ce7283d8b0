#!/usr/bin/env python3
"""PyTorch eager reference for `ove-train bench-train`: the same Qwen3-shaped decoder
(text only), the same step (zero grad, forward, token loss in f32, backward, global-norm
clip 1.0, AdamW), random tokens, printed the same way.

Model: RMSNorm (f32 compute), q/k/v/o projections, per-head RMSNorm on q and k, rotary
(rotate-half, f32), GQA by repeating kv heads, F.scaled_dot_product_attention(is_causal=True),
SwiGLU MLP, tied embeddings. Parameters in bf16, torch.optim.AdamW(fused=True) directly on
them (no f32 master weights), clip_grad_norm_ (foreach).
MFU = 6 x parameters x tokens / seconds / peak (attention-score FLOPs not counted).
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    # hidden, layers, heads, kv heads, head dim, mlp, vocab
    "qwen3-1.7b": (2048, 28, 16, 8, 128, 6144, 151936),
    "qwen3-0.6b": (1024, 28, 16, 8, 128, 3072, 151936),
    "tiny": (64, 2, 4, 2, 16, 128, 512),
}


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope(x, cos, sin):
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, h, nh, nkv, hd):
        super().__init__()
        self.nh, self.nkv, self.hd = nh, nkv, hd
        self.q_proj = nn.Linear(h, nh * hd, bias=False)
        self.k_proj = nn.Linear(h, nkv * hd, bias=False)
        self.v_proj = nn.Linear(h, nkv * hd, bias=False)
        self.o_proj = nn.Linear(nh * hd, h, bias=False)
        self.q_norm = RMSNorm(hd)
        self.k_norm = RMSNorm(hd)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.nh, self.hd)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, t, self.nkv, self.hd)).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        n = self.nh // self.nkv
        k = k.repeat_interleave(n, dim=1)
        v = v.repeat_interleave(n, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, self.nh * self.hd))


class Mlp(nn.Module):
    def __init__(self, h, i):
        super().__init__()
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, h, nh, nkv, hd, i):
        super().__init__()
        self.input_layernorm = RMSNorm(h)
        self.self_attn = Attention(h, nh, nkv, hd)
        self.post_attention_layernorm = RMSNorm(h)
        self.mlp = Mlp(h, i)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3(nn.Module):
    def __init__(self, h, layers, nh, nkv, hd, i, vocab, theta=1e6):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, h)
        self.layers = nn.ModuleList(Layer(h, nh, nkv, hd, i) for _ in range(layers))
        self.norm = RMSNorm(h)
        inv = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
        self.register_buffer("inv_freq", inv, persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, ids, targets):
        b, t = ids.shape
        pos = torch.arange(t, device=ids.device).float()
        freqs = pos[:, None] * self.inv_freq.float()[None, :]
        emb = torch.cat((freqs, freqs), -1)[None, None]
        cos, sin = emb.cos(), emb.sin()
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, cos, sin)
        x = self.norm(x)
        logits = (x.reshape(-1, x.shape[-1]) @ self.embed_tokens.weight.t()).float()
        return F.cross_entropy(logits, targets.reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="qwen3-1.7b", choices=sorted(PRESETS))
    ap.add_argument("--layers", type=int)
    ap.add_argument("--seq-len", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--phase-times", action="store_true",
                    help="also time forward+loss, backward, clip+AdamW (synchronizing between them)")
    a = ap.parse_args()
    h, layers, nh, nkv, hd, i, vocab = PRESETS[a.preset]
    layers = a.layers or layers
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    torch.manual_seed(a.seed)
    model = Qwen3(h, layers, nh, nkv, hd, i, vocab).to(dev)
    if cuda:
        model = model.to(torch.bfloat16)
        model.inv_freq.data = model.inv_freq.data.float()
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=cuda,
    )
    ids = torch.randint(vocab, (a.batch, a.seq_len), device=dev)
    targets = torch.randint(vocab, (a.batch, a.seq_len), device=dev)
    times, losses = [], []
    phases = [0.0, 0.0, 0.0]

    def mark():
        if not a.phase_times:
            return 0.0
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()
    for step in range(a.warmup + a.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(ids, targets)
        m1 = mark()
        loss.backward()
        m2 = mark()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        lv = loss.item()
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if a.phase_times and step >= a.warmup:
            phases[0] += m1 - t0
            phases[1] += m2 - m1
            phases[2] += t0 + dt - m2
        losses.append(lv)
        if step >= a.warmup:
            times.append(dt)
        print(f"step {step} {'warmup' if step < a.warmup else 'timed'} loss {lv:.4f} "
              f"grad_norm {gn.item():.3f} {dt * 1e3:.1f} ms", flush=True)
    mean = sum(times) / len(times)
    tokens = a.batch * a.seq_len
    tps = tokens / mean
    mfu = 6 * params * tps / (a.peak_tflops * 1e12)
    name = torch.cuda.get_device_name(dev) if cuda else "cpu"
    mem = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else 0.0
    print(f"pytorch {torch.__version__} eager on {name}: {a.preset} text-only decoder "
          f"({layers} layers), {params / 1e9:.3f}B parameters, "
          f"{'bf16 params, fused AdamW' if cuda else 'f32'}, batch {a.batch} x {a.seq_len}, "
          f"loss {losses[0]:.4f} -> {losses[-1]:.4f}, peak memory {mem:.1f} GiB")
    print(f"RESULT impl=pytorch-eager params={params} tokens_per_step={tokens} "
          f"step_ms={mean * 1e3:.1f} tokens_per_s={tps:.0f} mfu={mfu * 100:.2f}% "
          f"peak_tflops={a.peak_tflops:.0f}")
    if a.phase_times:
        f, b, o = (p * 1e3 / a.steps for p in phases)
        print(f"PHASES impl=pytorch-eager forward+loss_ms={f:.1f} backward_ms={b:.1f} "
              f"clip+adamw_ms={o:.1f}")


if __name__ == "__main__":
    main()
