#!/usr/bin/env python3
"""The HF transformers side of scripts/bench_pair.py: one random-weight model kept loaded, one measured call
per JSON request line on stdin, one JSON reply line on stdout (the protocol of `attnscope bench-serve`).

    python scripts/bench_pair_hf.py --model llama-100m --threads 2 [--seed 0] [--decode-method loop]

The model, its named shapes and the timed prefill call come from scripts/bench_hf_model.py (`load_config`,
`build_model`, `set_impl`, `run_prefill`, `Meter`), so a call here is timed as one bench_hf.py repeat.

  ready:   {"ready":true,"engine":"hf-transformers","torch":…,"transformers":…,"threads":…,"parameters":…}
  {"op":"prefill","t":T,"mode":"sdpa"|"eager"|"eager_output_attentions"}
      one model(ids[1,T], use_cache=False, logits_to_keep=1[, output_attentions=True]) → {"ok":true,"seconds":…}
  {"op":"decode","batch":B,"context":C,"steps":S,"mode":"sdpa"|"eager"}
      --decode-method loop (default): the B×C prompt is prefilled untimed (use_cache=True), then S single-token
      forwards with the DynamicCache and greedy argmax are timed (what attnscope's decode times);
      --decode-method generate: bench_hf.py's (t(generate S+1) - t(generate 1)), both timed in this call.
      → {"ok":true,"seconds":…,"steps":S,"seconds_per_step":…}
  {"op":"quit"} → {"ok":true}, exit (end of input exits too).
A bad request gets {"ok":false,"error":…}. Prompts are torch.randint with a generator seeded by --seed.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The protocol owns the real stdout; anything else printed (warnings, logs) goes to stderr.
_PROTOCOL = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)

import bench_hf_model as hf  # noqa: E402  (imports torch and transformers)
import torch  # noqa: E402
import transformers  # noqa: E402

DECODE_IMPL = {"sdpa": "sdpa", "eager": "eager"}


def reply(obj):
    _PROTOCOL.write(json.dumps(obj) + "\n")
    _PROTOCOL.flush()


class HfServer:
    """The loaded model and the prompt cache."""

    def __init__(self, name, seed, decode_method):
        self.cfg = hf.load_config(name)
        self.info = hf.shape_info(self.cfg)
        self.device = torch.device("cpu")
        self.model = hf.build_model(self.cfg, torch.float32, self.device, seed)
        self.meter = hf.Meter(self.device)
        self.seed = seed
        self.decode_method = decode_method
        self.prompts = {}

    def ids(self, batch, t):
        key = (batch, t)
        if key not in self.prompts:
            gen = torch.Generator().manual_seed(self.seed + 1000 * batch + t)
            self.prompts[key] = torch.randint(0, self.info["vocab_size"], (batch, t), generator=gen)
        return self.prompts[key]

    def check_len(self, n):
        max_pos = self.info["max_positions"]
        if n < 1 or (max_pos is not None and n > max_pos):
            raise ValueError(f"{n} positions: outside 1..{max_pos}")

    def prefill(self, t, mode):
        if mode not in hf.PREFILL_MODES:
            raise ValueError(f"unknown prefill mode {mode!r} (expected one of {hf.PREFILL_MODES})")
        self.check_len(t)
        ids = self.ids(1, t)
        t0 = self.meter.start()
        out = hf.run_prefill(self.model, mode, ids, self.info["n_layers"], "last")
        seconds, peak = self.meter.stop(t0)
        del out
        return dict(seconds=seconds, peak_bytes=peak)

    def decode(self, batch, context, steps, mode):
        if mode not in DECODE_IMPL:
            raise ValueError(f"unknown decode mode {mode!r} (expected sdpa or eager)")
        if batch < 1 or steps < 1:
            raise ValueError("decode: batch and steps must be at least 1")
        self.check_len(context + steps + 1)
        ids = self.ids(batch, context)
        if self.decode_method == "generate":
            gen_mode = "generate_" + mode
            mask = torch.ones_like(ids)
            t0 = time.perf_counter()
            hf.run_generate(self.model, gen_mode, ids, mask, 1)
            t_one = time.perf_counter() - t0
            t0 = time.perf_counter()
            hf.run_generate(self.model, gen_mode, ids, mask, steps + 1)
            seconds = time.perf_counter() - t0 - t_one
        else:
            hf.set_impl(self.model, DECODE_IMPL[mode])
            out = self.model(ids, use_cache=True, logits_to_keep=1)
            cache, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            del out
            t0 = time.perf_counter()
            for _ in range(steps):
                out = self.model(nxt, past_key_values=cache, use_cache=True)
                cache, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
            seconds = time.perf_counter() - t0
            del out, cache
        return dict(seconds=seconds, steps=steps, seconds_per_step=seconds / steps)

    def handle(self, req):
        op = req.get("op")
        if op == "prefill":
            return self.prefill(int(req["t"]), req["mode"])
        if op == "decode":
            return self.decode(int(req["batch"]), int(req["context"]), int(req["steps"]), req["mode"])
        raise ValueError(f"unknown op {op!r}")


def main():
    p = argparse.ArgumentParser(description="HF transformers side of scripts/bench_pair.py (line protocol).")
    p.add_argument("--model", required=True, help="named shape of scripts/bench_hf.py or a config path")
    p.add_argument("--threads", type=int, required=True, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decode-method", choices=["loop", "generate"], default="loop")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hf.log(f"bench_pair_hf: building {args.model} (random weights, f32, {args.threads} threads)")
    server = HfServer(args.model, args.seed, args.decode_method)
    total, _, _ = hf.count_params(server.model)
    reply(dict(ready=True, engine="hf-transformers", model=args.model, parameters=total,
               threads=torch.get_num_threads(), torch=torch.__version__, transformers=transformers.__version__,
               compute_dtype="f32", decode_method=args.decode_method))
    with torch.inference_mode():
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                if req.get("op") == "quit":
                    reply(dict(ok=True))
                    return
                out = server.handle(req)
                out["ok"] = True
            except Exception as e:  # a bad request or a failed call: reported, the server goes on
                out = dict(ok=False, error=f"{type(e).__name__}: {e}".replace("\n", " "))
            reply(out)


if __name__ == "__main__":
    main()
