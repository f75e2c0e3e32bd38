"""The model side of scripts/bench_hf.py, shared with scripts/bench_pair_hf.py: the named random-weight
shapes (the same as `attnscope bench`), building a model from a config, switching its attention
implementation, and timing one prefill or generate call with its peak memory."""

import math
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

PREFILL_MODES = ["sdpa", "eager", "eager_output_attentions"]
DECODE_MODES = ["generate_sdpa", "generate_eager", "generate_eager_output_attentions"]
MODE_IMPL = {
    "sdpa": ("sdpa", False),
    "eager": ("eager", False),
    "eager_output_attentions": ("eager", True),
    "generate_sdpa": ("sdpa", False),
    "generate_eager": ("eager", False),
    "generate_eager_output_attentions": ("eager", True),
}
DTYPES = {"float32": (torch.float32, "f32", 4), "bfloat16": (torch.bfloat16, "bf16", 2),
          "float16": (torch.float16, "f16", 2)}

# Named shapes: config.json-style dicts (the same shapes `attnscope bench` builds).
SHAPES = {
    "gpt2-124m": dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024,
                      bos_token_id=50256, eos_token_id=50256, tie_word_embeddings=True),
    "llama-100m": dict(model_type="llama", hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                       num_key_value_heads=4, intermediate_size=2048, vocab_size=32000, rope_theta=10000.0,
                       tie_word_embeddings=True, max_position_embeddings=2048, rms_norm_eps=1e-5,
                       bos_token_id=1, eos_token_id=2),
    "tinyllama-1.1b": dict(model_type="llama", hidden_size=2048, num_hidden_layers=22, num_attention_heads=32,
                           num_key_value_heads=4, intermediate_size=5632, vocab_size=32000, rope_theta=10000.0,
                           tie_word_embeddings=False, max_position_embeddings=2048, rms_norm_eps=1e-5,
                           bos_token_id=1, eos_token_id=2),
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, intermediate_size=8192, vocab_size=128256,
                         rope_theta=500000.0,
                         rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0, original_max_position_embeddings=8192),
                         tie_word_embeddings=True, max_position_embeddings=131072, rms_norm_eps=1e-5,
                         bos_token_id=128000, eos_token_id=128001),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, intermediate_size=18944, vocab_size=152064, rope_theta=1000000.0,
                       tie_word_embeddings=False, max_position_embeddings=32768, rms_norm_eps=1e-6,
                       use_sliding_window=False, bos_token_id=151643, eos_token_id=151643),
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# configs and parameter counts

def load_config(name):
    if name in SHAPES:
        d = dict(SHAPES[name])
        return AutoConfig.for_model(d.pop("model_type"), **d)
    if os.path.exists(name):
        return AutoConfig.from_pretrained(os.path.dirname(name) if os.path.isfile(name) else name)
    raise SystemExit(f"unknown model {name!r}: not a named shape ({', '.join(SHAPES)}) nor a config path")


def shape_info(cfg):
    n_layers = cfg.num_hidden_layers
    n_heads = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    hidden = cfg.hidden_size
    head_dim = getattr(cfg, "head_dim", None) or hidden // n_heads
    max_pos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    return dict(n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, hidden_size=hidden,
                vocab_size=cfg.vocab_size, max_positions=max_pos)


def count_params(model):
    """(total unique params, non-embedding params, params read per decode step)."""
    total = sum(p.numel() for p in model.parameters())  # parameters() de-duplicates tied weights
    emb_params = {id(p): p for m in model.modules() if isinstance(m, torch.nn.Embedding)
                  for p in m.parameters(recurse=False)}
    head = model.get_output_embeddings()
    head_params = {id(p): p for p in head.parameters(recurse=False)} if head is not None else {}
    excluded = dict(emb_params)
    excluded.update(head_params)  # an untied head is excluded too; a tied one is already in emb_params
    non_emb = total - sum(p.numel() for p in excluded.values())
    read_per_step = non_emb + sum(p.numel() for p in head_params.values())
    return total, non_emb, read_per_step


def meta_counts(cfg):
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    counts = count_params(m)
    del m
    return counts


def build_model(cfg, dtype, device, seed):
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    gc_conf = model.generation_config
    if gc_conf.pad_token_id is None:
        eos = gc_conf.eos_token_id if gc_conf.eos_token_id is not None else cfg.eos_token_id
        gc_conf.pad_token_id = eos[0] if isinstance(eos, (list, tuple)) else (eos if eos is not None else 0)
    return model


def set_impl(model, impl):
    if model.config._attn_implementation != impl:
        model.set_attn_implementation(impl)
    assert model.config._attn_implementation == impl, (model.config._attn_implementation, impl)


# ----------------------------------------------------------------------------------------------------------
# timing and memory

def read_hwm():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Meter:
    def __init__(self, device):
        self.device = device
        self.cpu_reset_ok = True

    def start(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.cpu_reset_ok = False
        return time.perf_counter()

    def stop(self, t0):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter() - t0
        if self.device.type == "cuda":
            mem = torch.cuda.max_memory_allocated()
        else:
            mem = read_hwm()
        return t, mem


def quantile(xs, q):
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(xs):
    return dict(median=quantile(xs, 0.5), min=min(xs), max=max(xs), p10=quantile(xs, 0.1), p90=quantile(xs, 0.9))


def run_prefill(model, mode, ids, n_layers, logits):
    impl, capture = MODE_IMPL[mode]
    set_impl(model, impl)
    kw = dict(use_cache=False, output_attentions=capture)
    if logits == "last":
        kw["logits_to_keep"] = 1
    out = model(ids, **kw)
    if capture:
        att = out.attentions
        assert att is not None and len(att) == n_layers and att[0].shape[-1] == ids.shape[1], "no attentions"
    return out


def run_generate(model, mode, ids, mask, new_tokens):
    impl, capture = MODE_IMPL[mode]
    set_impl(model, impl)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         do_sample=False, output_attentions=capture, return_dict_in_generate=True)
    assert out.sequences.shape[1] == ids.shape[1] + new_tokens, "generate stopped early"
    if capture:
        assert out.attentions is not None and len(out.attentions) == new_tokens, "no attentions from generate"
    return out
