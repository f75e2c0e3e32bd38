#!/usr/bin/env python3
"""Generate attnscope's golden test fixtures and the tiny default model.

Everything this script writes is committed; running it again regenerates all of
it deterministically (fixed seeds, CPU only, float32 reference):

  * tests/fixtures/<name>/            tiny random HF models (config.json +
                                      safetensors) with golden.json and
                                      golden.safetensors (reference logits and
                                      per-layer eager attention probabilities)
  * tests/fixtures/tokenizer_cases.json  reference token ids from HF tokenizers
  * tests/fixtures/README.md          description of the fixtures and format
  * models/tiny-random-llama/         random-weight default model + tokenizer

Recreate with the pinned versions:

    python3 -m venv .venv-golden
    .venv-golden/bin/pip install -r scripts/requirements-golden.txt
    .venv-golden/bin/python scripts/make_golden.py

The GPT-2 tokenizer cases read a GPT-2 tokenizer directory (default
/work/shared/tokenizers/gpt2, override with GPT2_TOKENIZER_DIR=...). Its files
are only read, never copied into the repository. If the directory is missing,
the existing "gpt2" entries of tokenizer_cases.json are kept as they are.

Reference semantics (what the Rust side must reproduce):

  * Every golden is computed from the model *as reloaded from disk* with
    `AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float32,
    attn_implementation="eager")`. For bf16/f16 fixtures the weights were
    rounded to that dtype first, so the reference is exactly what a loader that
    upcasts bf16/f16 -> f32 sees.
  * `plain` runs with no attention mask (HF builds its own causal /
    sliding-window mask) and position_ids = 0..T-1.
  * `par_visible` / `par_isolated` pass an explicit 4D float mask [1, 1, T, T]
    (0 = allowed, finfo(float32).min = hidden) plus explicit position_ids.
    Passing position_ids with a repeated value and NO mask is not an option in
    transformers 5.x: masking_utils.find_packed_sequence_indices would treat
    every non +1 step of position_ids as the start of a new packed sequence
    and block attention across it. A 4D mask is returned as-is by
    masking_utils (no sliding window, no packing logic is applied on top), so
    for sliding-window models the script puts the window into the 4D mask
    itself, using HF's slot-index rule (see golden.json "mask_rule").
"""

import copy
import glob
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

import safetensors
import safetensors.torch
import tokenizers
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    Qwen3Config,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = ROOT / "models"
GPT2_TOKENIZER_DIR = Path(os.environ.get("GPT2_TOKENIZER_DIR", "/work/shared/tokenizers/gpt2"))

torch.set_num_threads(1)  # bit-for-bit reproducible CPU reductions
torch.use_deterministic_algorithms(True)

VERSIONS = {
    "transformers_version": transformers.__version__,
    "torch_version": torch.__version__,
    "safetensors_version": safetensors.__version__,
    "tokenizers_version": tokenizers.__version__,
}
# transformers >= 5 writes `rope_parameters` + `dtype`; 4.x writes `rope_theta`/`rope_scaling` + `torch_dtype`.
NATIVE_LAYOUT = "5.x" if int(transformers.__version__.split(".")[0]) >= 5 else "4.x"
OTHER_LAYOUT = "4.x" if NATIVE_LAYOUT == "5.x" else "5.x"

NEG = torch.finfo(torch.float32).min
WEIGHT_STD = 0.2  # matrices / embeddings ~ N(0, 0.2^2)
BIAS_STD = 0.1  # biases ~ N(0, 0.1^2)
NORM_SPREAD = 0.25  # norm weights ~ U(1 - 0.25, 1 + 0.25)

# The two TEMPO-style parallel sets used by the par_* cases (slot indices).
PARALLEL_SETS = [[5, 6, 7], [11, 12]]
GREEDY_PROMPT = 6
GREEDY_NEW = 8
MIN_GREEDY_MARGIN = 0.02


# ----------------------------------------------------------------------------
# fixture definitions
# ----------------------------------------------------------------------------


def fixture_specs():
    """(name, config, T, weights_dtype, options). Shapes are deliberately varied."""
    specs = []
    common = dict(initializer_range=WEIGHT_STD, bos_token_id=1, eos_token_id=2)

    specs.append((
        "llama_gqa",
        LlamaConfig(vocab_size=192, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64,
                    rope_theta=10000.0, tie_word_embeddings=False, rms_norm_eps=1e-6, **common),
        20, "float32", {},
    ))
    specs.append((
        "llama3_mqa_bf16",
        LlamaConfig(vocab_size=160, hidden_size=40, intermediate_size=72, num_hidden_layers=2,
                    num_attention_heads=5, num_key_value_heads=1, head_dim=12, max_position_embeddings=64,
                    rope_theta=10000.0,
                    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                    tie_word_embeddings=True, rms_norm_eps=1e-5, **common),
        18, "bfloat16", {},
    ))
    specs.append((
        "llama_linear_f16_sharded",
        LlamaConfig(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                    rope_theta=10000.0, rope_scaling={"rope_type": "linear", "factor": 2.0},
                    attention_bias=True, mlp_bias=True, tie_word_embeddings=False, rms_norm_eps=1e-6, **common),
        16, "float16", {"max_shard_size": "30KB"},
    ))
    specs.append((
        "mistral",
        MistralConfig(vocab_size=176, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                      rope_theta=10000.0, sliding_window=6, tie_word_embeddings=False, rms_norm_eps=1e-5,
                      **common),
        22, "float32", {},
    ))
    specs.append((
        "qwen2",
        Qwen2Config(vocab_size=150, hidden_size=36, intermediate_size=72, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=3, max_position_embeddings=64,
                    rope_theta=1000000.0, use_sliding_window=False, tie_word_embeddings=True,
                    rms_norm_eps=1e-6, **common),
        17, "float32", {},
    ))
    specs.append((
        "qwen3",
        Qwen3Config(vocab_size=144, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                    rope_theta=1000000.0, use_sliding_window=False, tie_word_embeddings=True,
                    rms_norm_eps=1e-6, **common),
        15, "float32", {},
    ))
    specs.append((
        "gpt2",
        GPT2Config(vocab_size=200, n_embd=48, n_head=3, n_layer=2, n_positions=64,
                   activation_function="gelu_new", tie_word_embeddings=True, layer_norm_epsilon=1e-5,
                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common),
        24, "float32", {},
    ))
    # rotary_pct 0.25 would give int(8 * 0.25) = 2 rotary dims = a single frequency (1.0), for which
    # rope_theta does not matter at all -> degenerate; 0.5 gives 4 rotary dims (2 frequencies).
    specs.append((
        "gpt_neox_parallel",
        GPTNeoXConfig(vocab_size=180, hidden_size=40, intermediate_size=80, num_hidden_layers=2,
                      num_attention_heads=5, max_position_embeddings=64, rotary_pct=0.5,
                      rotary_emb_base=10000, use_parallel_residual=True, tie_word_embeddings=False,
                      hidden_act="gelu", layer_norm_eps=1e-5, hidden_dropout=0.0, attention_dropout=0.0,
                      **common),
        19, "float32", {},
    ))
    specs.append((
        "gpt_neox_sequential",
        GPTNeoXConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, max_position_embeddings=64, rotary_pct=1.0,
                      rotary_emb_base=10000, use_parallel_residual=False, tie_word_embeddings=False,
                      hidden_act="gelu", layer_norm_eps=1e-5, hidden_dropout=0.0, attention_dropout=0.0,
                      **common),
        14, "float32", {},
    ))
    # Config rewritten into the other layout after saving. llama3 scaling with theta 5e5 and
    # head_dim 8: wavelengths 6.28 (< 16: unchanged) and 167, 4443, ... (> 32: divided by factor),
    # so this covers the llama3 branch that llama3_mqa_bf16 cannot reach (its smallest wavelength,
    # 2*pi, is above its high_freq_wavelen of 4).
    specs.append((
        "llama_config_other_layout",
        LlamaConfig(vocab_size=136, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                    rope_theta=500000.0,
                    rope_scaling={"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 2.0, "original_max_position_embeddings": 32},
                    tie_word_embeddings=False, rms_norm_eps=1e-5, **common),
        21, "float32", {"rewrite_layout": True},
    ))
    return specs


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def fail(msg):
    print(f"FATAL: {msg}", file=sys.stderr)
    sys.exit(1)


def seed_for(name):
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


@torch.no_grad()
def init_weights(model, seed):
    """Deterministic, larger-than-default init so attention is far from uniform and logits are not ~0."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if p.ndim == 1 and name.endswith("bias"):
            p.copy_(torch.randn(p.shape, generator=g) * BIAS_STD)
        elif p.ndim == 1:  # RMSNorm / LayerNorm / q_norm / k_norm weights
            p.copy_(1.0 + (torch.rand(p.shape, generator=g) * 2 - 1) * NORM_SPREAD)
        else:
            p.copy_(torch.randn(p.shape, generator=g) * WEIGHT_STD)


@torch.no_grad()
def round_weights(model, dtype):
    for _, p in model.named_parameters():
        p.copy_(p.to(dtype).to(torch.float32))


def parallel_positions(T):
    groups = [-1] * T
    for gi, s in enumerate(PARALLEL_SETS):
        for slot in s:
            assert slot < T
            groups[slot] = gi
    pos, p = [], -1
    for i in range(T):
        if groups[i] >= 0 and i > 0 and groups[i - 1] == groups[i]:
            pos.append(p)  # same logical step as the previous slot of its set
        else:
            p += 1
            pos.append(p)
    return pos, groups


def allowed_matrix(T, groups, visibility, sliding_window):
    """allowed[i, j]: may query slot i attend to key slot j."""
    a = np.zeros((T, T), dtype=bool)
    for i in range(T):
        for j in range(T):
            ok = j <= i
            if sliding_window is not None:
                ok = ok and (i - j) < sliding_window  # HF: kv_idx > q_idx - sliding_window
            if visibility == "isolated" and j != i and groups[i] >= 0 and groups[j] == groups[i]:
                ok = False
            a[i, j] = ok
    return a


def float_mask(allowed):
    m = torch.zeros(allowed.shape, dtype=torch.float32)
    m[~torch.from_numpy(allowed)] = NEG
    return m[None, None]


@torch.no_grad()
def forward(model, ids, pos, mask4d=None):
    out = model(
        input_ids=torch.tensor([ids]),
        position_ids=torch.tensor([pos]),
        attention_mask=mask4d,
        output_attentions=True,
        use_cache=False,
    )
    logits = out.logits[0].float().contiguous()
    attn = [a[0].float().contiguous() for a in out.attentions]
    return logits, attn


def check_attention(name, case, attn, allowed):
    al = torch.from_numpy(allowed)
    min_allowed = 1.0
    for li, a in enumerate(attn):
        if not torch.all(a[:, ~al] == 0):
            fail(f"{name}/{case}: layer {li} has non-zero probability on a masked key")
        rows = a.sum(-1)
        if not torch.allclose(rows, torch.ones_like(rows), atol=1e-5):
            fail(f"{name}/{case}: layer {li} rows do not sum to 1 (max err {(rows - 1).abs().max():.3g})")
        if not torch.isfinite(a).all():
            fail(f"{name}/{case}: non-finite attention")
        mn = a[:, al].min().item()
        if mn <= 0:
            fail(f"{name}/{case}: layer {li} underflowed an allowed probability to 0 (init too large)")
        min_allowed = min(min_allowed, mn)
    return min_allowed


def zero_pattern_note(attn_plain, T, sliding_window):
    """Derive, from exactly-zero probabilities of the plain run, which keys each query saw."""
    z = torch.stack([(a == 0).all(0) for a in attn_plain]).all(0)  # [T, T] zero in every head & layer
    vis = (~z).numpy()
    for i in range(T):
        js = [j for j in range(T) if vis[i, j]]
        expect = [j for j in range(T) if j <= i and i - j < sliding_window]
        if js != expect:
            fail(f"sliding window rule mismatch at query {i}: HF visible {js}, expected {expect}")
    last = T - 1
    return (
        f"Derived from exactly-zero probabilities of the plain case (T={T}, sliding_window={sliding_window}): "
        f"query slot i sees key slot j iff j <= i and i - j < {sliding_window} (i.e. j > i - {sliding_window}), "
        f"so each query sees at most {sliding_window} keys including itself; e.g. query {last} sees keys "
        f"{last - sliding_window + 1}..{last}. The window is over slot (cache) indices, not position_ids; "
        f"the par_* cases use the same slot rule inside their explicit 4D mask."
    )


@torch.no_grad()
def greedy(model, prompt):
    ids = list(prompt)
    margins = []
    for _ in range(GREEDY_NEW):
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].float()
        top = torch.topk(logits, 2).values
        margins.append((top[0] - top[1]).item())
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):], min(margins)


def rewrite_config_layout(cfg, target):
    """Rewrite a config.json dict between the 4.x and 5.x layouts."""
    cfg = dict(cfg)
    if target == "4.x":
        rp = dict(cfg.pop("rope_parameters"))
        cfg["rope_theta"] = rp.pop("rope_theta")
        if cfg.get("model_type") == "gpt_neox":
            cfg["rotary_emb_base"] = cfg.pop("rope_theta")
            cfg["rotary_pct"] = rp.pop("partial_rotary_factor", 1.0)
        rtype = rp.get("rope_type", "default")
        cfg["rope_scaling"] = None if rtype == "default" and len(rp) == 1 else rp
        cfg["torch_dtype"] = cfg.pop("dtype")
    else:
        rp = dict(cfg.pop("rope_scaling", None) or {})
        if "type" in rp:
            rp.setdefault("rope_type", rp.pop("type"))
        rp.setdefault("rope_type", "default")
        rp["rope_theta"] = cfg.pop("rope_theta")
        cfg["rope_parameters"] = rp
        cfg["dtype"] = cfg.pop("torch_dtype")
    return dict(sorted(cfg.items()))


def config_layout(cfg):
    has5 = "rope_parameters" in cfg or "dtype" in cfg
    has4 = "rope_theta" in cfg or "rope_scaling" in cfg or "torch_dtype" in cfg or "rotary_pct" in cfg
    if has5 == has4:
        fail(f"ambiguous config layout: {sorted(cfg)}")
    return "5.x" if has5 else "4.x"


def clean_dir(d):
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)


# ----------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------


def make_fixture(name, config, T, wdtype, opts):
    out = FIXTURES / name
    clean_dir(out)
    seed = seed_for(name)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    init_weights(model, seed)
    torch_wdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[wdtype]
    if wdtype != "float32":
        round_weights(model, torch_wdtype)
        to_save = copy.deepcopy(model).to(torch_wdtype)
    else:
        to_save = model
    save_kwargs = {"safe_serialization": True}
    if "max_shard_size" in opts:
        save_kwargs["max_shard_size"] = opts["max_shard_size"]
    to_save.save_pretrained(out, **save_kwargs)
    gen_cfg = out / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()

    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    if opts.get("rewrite_layout"):
        cfg = rewrite_config_layout(cfg, OTHER_LAYOUT)
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    layout = config_layout(cfg)

    shards = sorted(glob.glob(str(out / "*.safetensors")))
    sharded = (out / "model.safetensors.index.json").exists()
    if opts.get("max_shard_size") and not (sharded and 2 <= len(shards) <= 3):
        fail(f"{name}: expected 2-3 shards, got {len(shards)} ({shards})")
    for s in shards:
        with safetensors.safe_open(s, "pt") as f:
            for k in f.keys():
                if f.get_slice(k).get_dtype() != {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}[wdtype]:
                    fail(f"{name}: tensor {k} in {s} has dtype {f.get_slice(k).get_dtype()}")

    # Reload exactly what is on disk, upcast to f32: this is the reference model.
    ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    if opts.get("rewrite_layout"):
        # the rewritten config must mean the same thing as the original one
        assert ref.config.rope_parameters == model.config.rope_parameters, (
            ref.config.rope_parameters, model.config.rope_parameters)
    sd_mem = model.state_dict()
    for k, v in ref.state_dict().items():
        if k in sd_mem and not torch.equal(v, sd_mem[k]):
            fail(f"{name}: reloaded tensor {k} differs from the in-memory (rounded) model")

    vocab = config.vocab_size
    sw = getattr(ref.config, "sliding_window", None) if name == "mistral" else None
    # Draw the random input ids; redraw (deterministically) until greedy decoding from their first
    # GREEDY_PROMPT ids has a comfortable top1-top2 logit margin, so f32 noise cannot flip an argmax.
    for attempt in range(100):
        g = torch.Generator().manual_seed(seed + 1 + attempt)
        input_ids = torch.randint(3, vocab, (T,), generator=g).tolist()
        prompt = input_ids[:GREEDY_PROMPT]
        greedy_ids, margin = greedy(ref, prompt)
        if margin >= MIN_GREEDY_MARGIN:
            break
    else:
        fail(f"{name}: no input draw gave a greedy margin >= {MIN_GREEDY_MARGIN}")
    tensors = {}
    cases = []
    stats = {}

    # plain: no mask, HF builds causal (+ sliding window) itself.
    plain_pos = list(range(T))
    plain_groups = [-1] * T
    logits, attn = forward(ref, input_ids, plain_pos)
    allowed = allowed_matrix(T, plain_groups, "visible", sw)
    stats["plain"] = check_attention(name, "plain", attn, allowed)
    # same thing with our own explicit 4D mask must be bit-identical (validates the mask builder)
    logits_m, attn_m = forward(ref, input_ids, plain_pos, float_mask(allowed))
    if not (torch.equal(logits, logits_m) and all(torch.equal(a, b) for a, b in zip(attn, attn_m))):
        fail(f"{name}: explicit 4D causal mask does not reproduce the mask-free forward")
    # and the in-memory model gives the same answer
    logits_mem, _ = forward(model, input_ids, plain_pos)
    if not torch.allclose(logits, logits_mem, atol=1e-5, rtol=0):
        fail(f"{name}: reloaded model disagrees with in-memory model")
    tensors["plain.logits"] = logits
    for li, a in enumerate(attn):
        tensors[f"plain.attn.{li}"] = a
    cases.append({"name": "plain", "input_ids": input_ids, "position_ids": plain_pos,
                  "groups": plain_groups, "visibility": "visible"})
    note = zero_pattern_note(attn, T, sw) if sw is not None else None

    par_pos, par_groups = parallel_positions(T)
    par_results = {}
    for vis in ("visible", "isolated"):
        cname = f"par_{vis}"
        allowed = allowed_matrix(T, par_groups, vis, sw)
        logits, attn = forward(ref, input_ids, par_pos, float_mask(allowed))
        stats[cname] = check_attention(name, cname, attn, allowed)
        par_results[vis] = (logits, attn)
        tensors[f"{cname}.logits"] = logits
        for li, a in enumerate(attn):
            tensors[f"{cname}.attn.{li}"] = a
        cases.append({"name": cname, "input_ids": input_ids, "position_ids": par_pos,
                      "groups": par_groups, "visibility": vis})
    dl = (par_results["visible"][0] - par_results["isolated"][0]).abs().max().item()
    da = max((a - b).abs().max().item() for a, b in zip(par_results["visible"][1], par_results["isolated"][1]))
    if dl < 1e-3 or da < 1e-3:
        fail(f"{name}: isolated does not differ from visible (logits {dl:.3g}, attn {da:.3g})")

    safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "golden.safetensors"))

    golden = {
        "model_type": cfg["model_type"],
        "transformers_version": VERSIONS["transformers_version"],
        "torch_version": VERSIONS["torch_version"],
        "config_layout": layout,
        "weights_dtype": wdtype,
        "sharded": sharded,
        "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads,
        "seq_len": T,
        "vocab_size": vocab,
        "mask_rule": (
            "key slot j is visible to query slot i iff j <= i"
            + (f" and i - j < {sw}" if sw is not None else "")
            + "; par_isolated additionally hides j != i with groups[j] == groups[i] >= 0. "
            "plain: no attention_mask passed (HF builds it); par_*: explicit 4D float mask "
            "(0 / finfo(float32).min) of shape [1,1,T,T]."
        ),
    }
    if note is not None:
        golden["sliding_window"] = sw
        golden["sliding_window_note"] = note
    golden["cases"] = cases
    golden["greedy"] = {"input_ids": prompt, "greedy_ids": greedy_ids, "min_top2_margin": round(margin, 6)}
    (out / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")

    lg = tensors["plain.logits"]
    max_p = max(tensors[f"plain.attn.{li}"].max().item() for li in range(config.num_hidden_layers))
    print(f"{name:28s} T={T:2d} V={vocab} heads={config.num_attention_heads} layout={layout} {wdtype:8s} "
          f"shards={len(shards)} | logits std {lg.std():.2f} max|{lg.abs().max():.1f}| | attn min-allowed "
          f"{min(stats.values()):.2e} max {max_p:.3f} | greedy margin {margin:.3f} | vis-iso dlogit {dl:.3f}")
    return {"name": name, "model_type": cfg["model_type"], "layout": layout, "wdtype": wdtype,
            "sharded": sharded, "shards": len(shards), "T": T, "config": ref.config, "sw": sw}


# ----------------------------------------------------------------------------
# tiny default model + tokenizer
# ----------------------------------------------------------------------------

TRAINING_TEXT = """\
Attention is the part of a transformer that decides, for every token, which earlier tokens matter.
Each head compares a query with the keys of the tokens before it, turns the scores into probabilities
with a softmax, and mixes the values with those weights. Researchers look at these patterns to learn
how a model reads: some heads follow the previous token, some look back at the first token of the
sequence, and some copy a name that appeared a few sentences ago.

The weather in the small town was mild that spring. In the morning the baker opened the shop early,
and the smell of fresh bread drifted down the street. Children walked to school in pairs, talking
about the river, the old bridge, and the dog that always waited by the gate. In the evening people sat
outside, watched the light fade over the hills, and told the same stories they had told for years.

A good test is small, fast, and exact. It should fail loudly when something changes, and it should
explain what it expected and what it found. When two programs must agree to the last bit, the test
records the inputs, the outputs, and the versions of every tool that produced them, so that anyone can
run it again tomorrow and get the very same numbers.

Numbers such as 0, 1, 2, 10, 42, 100, 256, 1024, and 2025 appear in text all the time, as do dates like
March 3rd and times like 10:30. Punctuation matters too: commas, periods, question marks? exclamation
marks! quotes "like these", parentheses (like these), and the occasional semicolon; or colon: here.

The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. Peter Piper picked a
peck of pickled peppers. How much wood would a woodchuck chuck if a woodchuck could chuck wood? These
old sentences are used to test keyboards, fonts, and now tokenizers, because they contain many letters.

When the model generates text, it picks one token at a time. Greedy decoding always takes the most likely
token; sampling draws from the distribution instead. With random weights the output is gibberish, but
the machinery is the same: embed the tokens, run every layer, project to the vocabulary, and choose.
"""

TOKENIZER_TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing space ",
    "line one\nline two\n\nline four",
    "tabs\tand\ttabs",
    "Numbers: 0 1 2 10 42 1024 2025-03-03",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "emoji \U0001F600\U0001F680 and a family \U0001F468\u200D\U0001F469\u200D\U0001F467",
    "attention heads look back at the first token",
    "",
]


def train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        min_frequency=1,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT.splitlines(keepends=True), trainer=trainer)
    assert tok.token_to_id("<unk>") == 0 and tok.token_to_id("<s>") == 1 and tok.token_to_id("</s>") == 2
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s>:1 $B:1", special_tokens=[("<s>", 1)]
    )
    return tok


def make_tiny_model():
    out = MODELS / "tiny-random-llama"
    clean_dir(out)
    tok = train_tokenizer()
    vocab = tok.get_vocab_size()
    if vocab != 512:
        fail(f"tokenizer trained to {vocab} tokens, expected 512 (add more training text)")
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 1024,
        "clean_up_tokenization_spaces": False,
    }, indent=2) + "\n")

    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=172, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=1024,
                         rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-5,
                         initializer_range=WEIGHT_STD, bos_token_id=1, eos_token_id=2)
    seed = seed_for("tiny-random-llama")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    init_weights(model, seed)
    model.save_pretrained(out, safe_serialization=True)
    gen_cfg = out / "generation_config.json"
    if gen_cfg.exists():
        gen_cfg.unlink()
    (out / "README.md").write_text(
        "# tiny-random-llama\n\n"
        "**Random weights.** This model was never trained: its output is gibberish.\n\n"
        "It exists for smoke tests and as the default model of `attnscope run`, so the CLI works\n"
        "out of the box without downloading anything.\n\n"
        "- architecture: `LlamaForCausalLM`, hidden 64, 4 layers, 8 heads, 4 KV heads (head_dim 8),\n"
        "  intermediate 172, max_position_embeddings 1024, rope_theta 10000, tied embeddings, float32\n"
        f"- config layout: {NATIVE_LAYOUT} (as written by transformers {transformers.__version__})\n"
        "- tokenizer: byte-level BPE, vocab 512 (`<unk>`=0, `<s>`=1, `</s>`=2), trained on a few\n"
        "  paragraphs of English written inline in `scripts/make_golden.py`; its post-processor\n"
        "  prepends `<s>`. bos_token_id 1, eos_token_id 2.\n\n"
        "Regenerate with `scripts/make_golden.py` (see its docstring).\n"
    )
    # sanity: the model loads and runs
    ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        ref(input_ids=torch.tensor([[1, 50, 60, 70]]))
    return out, tok


def load_gpt2_tokenizer(d):
    """AutoTokenizer on the GPT-2 tokenizer directory, with a documented fallback.

    The copy at /work/shared/tokenizers/gpt2 is not loadable as-is: its merges contain "ĠCla ude" while its
    vocab has no "ĠClaude" (id 40559 holds "ĠLLMProvider" instead), and tokenizers refuses a merge whose
    result is not in the vocab ("Token `ĠClaude` out of vocabulary"; reported as "data did not match any
    variant of untagged enum ModelUntagged" when reading tokenizer.json). The Python binding wraps the Rust
    `tokenizers` crate, which does this check in its BPE builder. If AutoTokenizer fails, build transformers' GPT2Tokenizer from vocab.json + merges.txt
    minus the merges whose result is missing from the vocab. That only changes the encoding of text where
    the dropped merge would fire (here: " Claude"), which no test text contains.
    """
    try:
        return AutoTokenizer.from_pretrained(str(d)), {"gpt2_loaded_via": "AutoTokenizer.from_pretrained"}
    except Exception as e:  # noqa: BLE001
        err = str(e)
    from transformers import GPT2Tokenizer

    vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
    merges = [m for m in (d / "merges.txt").read_text(encoding="utf-8").split("\n")[1:] if m]
    dropped = [m for m in merges if "".join(m.split(" ")) not in vocab]
    kept = [tuple(m.split(" ")) for m in merges if "".join(m.split(" ")) in vocab]
    print(f"warning: AutoTokenizer({d}) failed ({err}); using GPT2Tokenizer(vocab.json, merges.txt) "
          f"without the dangling merges {dropped}")
    tok = GPT2Tokenizer(vocab=vocab, merges=kept)
    if tok("Hello world")["input_ids"] != [15496, 995]:
        fail("fallback GPT-2 tokenizer does not reproduce GPT-2's 'Hello world' -> [15496, 995]")
    for text in TOKENIZER_TEXTS:
        if any("".join(m.split(" ")).replace("\u0120", " ").strip() in text for m in dropped):
            fail(f"test text {text!r} would hit a dropped GPT-2 merge")
    return tok, {
        "gpt2_loaded_via": "GPT2Tokenizer(vocab=vocab.json, merges=merges.txt minus dropped merges)",
        "gpt2_load_error": f"AutoTokenizer.from_pretrained failed: {err}",
        "gpt2_dropped_merges": dropped,
    }


def tokenizer_cases(tiny_dir, raw_tok):
    path = FIXTURES / "tokenizer_cases.json"
    result = {"tiny-random-llama": [], "gpt2": []}
    hf = AutoTokenizer.from_pretrained(str(tiny_dir))
    for text in TOKENIZER_TEXTS:
        ids = hf(text)["input_ids"]
        raw = raw_tok.encode(text).ids
        if ids != raw:
            fail(f"AutoTokenizer({tiny_dir}) disagrees with tokenizer.json for {text!r}: {ids} vs {raw}")
        if not ids or ids[0] != 1:
            fail(f"tiny-random-llama tokenizer did not prepend <s> for {text!r}: {ids}")
        result["tiny-random-llama"].append({"text": text, "ids": ids})
    gpt2_meta = {}
    if GPT2_TOKENIZER_DIR.exists():
        g2, gpt2_meta = load_gpt2_tokenizer(GPT2_TOKENIZER_DIR)
        for text in TOKENIZER_TEXTS:
            result["gpt2"].append({"text": text, "ids": g2(text)["input_ids"]})
    elif path.exists():
        print(f"warning: {GPT2_TOKENIZER_DIR} not found, keeping existing gpt2 tokenizer cases")
        old = json.loads(path.read_text())
        result["gpt2"] = old["gpt2"]
        gpt2_meta = {k: v for k, v in old.get("_meta", {}).items() if k.startswith("gpt2_")}
    else:
        fail(f"{GPT2_TOKENIZER_DIR} not found and no existing tokenizer_cases.json to keep")
    result["_meta"] = {
        "transformers_version": VERSIONS["transformers_version"],
        "tokenizers_version": VERSIONS["tokenizers_version"],
        "note": "ids from AutoTokenizer(...)(text) with add_special_tokens left at its default; "
                f"tiny-random-llama = models/tiny-random-llama, gpt2 = the GPT-2 tokenizer directory "
                f"{GPT2_TOKENIZER_DIR} (not copied into the repository).",
        **gpt2_meta,
    }
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return gpt2_meta


# ----------------------------------------------------------------------------
# README
# ----------------------------------------------------------------------------


def describe(info):
    c = info["config"]
    mt = info["model_type"]
    if mt == "gpt2":
        hd = c.n_embd // c.n_head
        shape = (f"n_embd {c.n_embd}, {c.n_head} heads (head_dim {hd}), n_layer {c.n_layer}, "
                 f"n_positions {c.n_positions}, {c.activation_function}, vocab {c.vocab_size}")
    else:
        hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        shape = (f"hidden {c.hidden_size}, {c.num_attention_heads} heads / {kv} kv (head_dim {hd}), "
                 f"intermediate {c.intermediate_size}, vocab {c.vocab_size}")
    rp = getattr(c, "rope_parameters", None)
    extra = []
    if rp:
        extra.append("rope " + ", ".join(f"{k}={v}" for k, v in sorted(rp.items())))
    for attr in ("attention_bias", "mlp_bias", "use_parallel_residual"):
        if getattr(c, attr, None):
            extra.append(f"{attr}=true")
    if mt == "gpt_neox" and not c.use_parallel_residual:
        extra.append("use_parallel_residual=false")
    if info["sw"]:
        extra.append(f"sliding_window={info['sw']}")
    extra.append("tied embeddings" if c.tie_word_embeddings else "untied lm_head")
    return shape, "; ".join(extra)


def write_readme(infos, gpt2_meta):
    lines = [
        "# Golden fixtures",
        "",
        "Generated by `scripts/make_golden.py` (do not edit by hand; rerun the script). Versions:",
        "",
    ]
    for k, v in VERSIONS.items():
        lines.append(f"- {k.replace('_version', '')} {v}")
    lines += [
        "",
        "Recreate: `python3 -m venv .venv-golden && .venv-golden/bin/pip install -r "
        "scripts/requirements-golden.txt && .venv-golden/bin/python scripts/make_golden.py`.",
        "CPU only, fixed seeds, single-threaded torch, deterministic.",
        "",
        "Every model is a tiny random model built from a config object with `attn_implementation=\"eager\"`,",
        f"2 layers, weights ~ N(0, {WEIGHT_STD}^2), biases ~ N(0, {BIAS_STD}^2), norm weights ~ "
        f"U(1 +/- {NORM_SPREAD}), saved",
        "with `save_pretrained(..., safe_serialization=True)` (generation_config.json removed).",
        "",
        "| fixture | model_type | T | shape | details | weights | config layout | sharded |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for info in infos:
        shape, extra = describe(info)
        sh = f"yes ({info['shards']} shards + index)" if info["sharded"] else "no"
        lines.append(f"| `{info['name']}` | {info['model_type']} | {info['T']} | {shape} | {extra} | "
                     f"{info['wdtype']} | {info['layout']} | {sh} |")
    lines += [
        "",
        "## Config layouts",
        "",
        "- **5.x** (written natively by transformers 5.x): `rope_parameters` = {`rope_type`, `rope_theta`, "
        "scaling fields such as `factor`, `partial_rotary_factor` for GPT-NeoX} and `dtype`.",
        "- **4.x**: top-level `rope_theta` and `rope_scaling` (null or {`rope_type`, `factor`, ...}) and "
        "`torch_dtype`; GPT-NeoX 4.x configs use `rotary_pct` / `rotary_emb_base` instead.",
        "",
        f"All fixtures except `llama_config_other_layout` use the layout save_pretrained writes ({NATIVE_LAYOUT}).",
        f"`llama_config_other_layout/config.json` was rewritten by the script into the {OTHER_LAYOUT} layout "
        "(its `transformers_version` field still says the version that generated it); the script checks that "
        "transformers parses the rewritten file to the same rope parameters.",
        "",
        "## Weights dtype",
        "",
        "For `bfloat16` / `float16` fixtures, the f32 weights were rounded to that dtype *before* computing the",
        "reference, and every golden is computed from the model reloaded from disk in float32. A loader that",
        "upcasts bf16/f16 to f32 must therefore reproduce the goldens to f32 accuracy.",
        "",
        "## Golden format",
        "",
        "Each fixture directory holds the model (`config.json` + `model.safetensors`, or",
        "`model.safetensors.index.json` + shards) plus:",
        "",
        "`golden.json`:",
        "",
        "```json",
        '{"model_type": "...", "transformers_version": "...", "torch_version": "...",',
        ' "config_layout": "4.x"|"5.x", "weights_dtype": "float32"|"bfloat16"|"float16", "sharded": false,',
        ' "num_layers": 2, "num_heads": H, "seq_len": T, "vocab_size": V, "mask_rule": "...",',
        ' "sliding_window": 6, "sliding_window_note": "... (mistral only)",',
        ' "cases": [{"name": "plain", "input_ids": [...], "position_ids": [...], "groups": [...],',
        '            "visibility": "visible"},',
        '           {"name": "par_visible", ...}, {"name": "par_isolated", ..., "visibility": "isolated"}],',
        ' "greedy": {"input_ids": [...6 prompt ids...], "greedy_ids": [...8 new ids only...],',
        '            "min_top2_margin": 0.1}}',
        "```",
        "",
        "`golden.safetensors`: float32 tensors `{case}.logits` [T, vocab] and `{case}.attn.{layer}` [heads, T, T]",
        "(softmax probabilities as returned by `output_attentions=True`, batch dimension dropped).",
        "",
        "Cases:",
        "",
        "- `plain`: position_ids 0..T-1, groups all -1, no attention_mask passed (HF builds the causal mask; for",
        "  mistral also the sliding window).",
        f"- `par_visible` / `par_isolated`: TEMPO-style parallel sets at slots {PARALLEL_SETS}; slots of one set",
        "  share a position id, positions advance by one per logical step (0,1,2,3,4,5,5,5,6,7,8,9,9,10,...);",
        "  groups = set index for slots in a set, -1 otherwise. Run with an explicit 4D float mask [1,1,T,T]",
        "  (0 allowed / finfo(float32).min hidden). visible = causal (plus mistral's sliding window over slot",
        "  indices); isolated = visible AND a query may not attend to the *other* slots of its own group (it still",
        "  attends to itself). The script verifies masked probabilities are exactly 0, rows sum to 1, allowed",
        "  probabilities are > 0, and isolated differs from visible.",
        "- `greedy`: the first 6 plain input ids, then 8 tokens by argmax over full re-forwards (no cache, no",
        "  mask, default positions, no eos stopping). `min_top2_margin` is the smallest top1-top2 logit gap.",
        "",
        "Notes on transformers behaviour:",
        "",
        "- A 4D mask is used as-is by transformers' masking_utils (no causal/sliding/packing logic is added).",
        "  Passing the repeated position_ids *without* a mask would be wrong: transformers then treats every",
        "  position step that is not +1 as the start of a new packed sequence.",
        "- The `plain` case with our own explicit causal (+window) 4D mask is checked to be bit-identical to the",
        "  mask-free run, so the mask rule in `golden.json` is exactly HF's.",
        "- Mistral sliding window: query slot i sees key slot j iff `0 <= i - j < sliding_window`",
        "  (HF: `kv_idx > q_idx - sliding_window`), i.e. `sliding_window` keys including itself.",
        "- transformers 5.x GPT-NeoX configs carry no `rotary_pct` / `rotary_emb_base`: they are folded into",
        "  `rope_parameters.partial_rotary_factor` / `rope_parameters.rope_theta` (rotary_ndims =",
        "  int(head_dim * partial_rotary_factor)). `gpt_neox_parallel` uses 0.5 (4 of 8 dims) because 0.25 would",
        "  leave a single rotary frequency (1.0) on which rope_theta has no effect. Note the `rope_theta` there",
        "  is the JSON integer `10000`.",
        "- GPT-NeoX `query_key_value` is fused per head: output rows are [head0: q,k,v | head1: q,k,v | ...]",
        "  (HF views it as [T, heads, 3*head_dim] and chunks the last dim).",
        "- GPT-2 weights are saved as `GPT2LMHeadModel` writes them: keys prefixed `transformer.` (the hub's",
        "  openai-community/gpt2 checkpoint has unprefixed keys), Conv1D weights stored [in, out], no `attn.bias`",
        "  buffers.",
        "- llama3 rope: `llama3_mqa_bf16` (orig 16, high_freq_factor 4, head_dim 12) has wavelengths 6.28",
        "  (smoothed band) and 29..13540 (> 16: divided by factor); `llama_config_other_layout` (orig 32,",
        "  high_freq_factor 2, theta 5e5, head_dim 8) has 6.28 (< 16: unchanged) and 167.. (divided), so",
        "  together they cover all three branches.",
        "",
        "## tokenizer_cases.json",
        "",
        "`{\"tiny-random-llama\": [{\"text\", \"ids\"}...], \"gpt2\": [...], \"_meta\": {...}}`: ids from",
        "`AutoTokenizer.from_pretrained(dir)(text)[\"input_ids\"]` (default add_special_tokens) for",
        "`models/tiny-random-llama` (prepends `<s>` = 1) and for the GPT-2 tokenizer directory",
        f"`{GPT2_TOKENIZER_DIR}` (adds nothing; not copied into the repository).",
        "",
    ]
    if gpt2_meta.get("gpt2_dropped_merges"):
        lines[-1:-1] = [
            "",
            f"**Caveat:** that copy's merges contain {gpt2_meta['gpt2_dropped_merges']} whose results are not in",
            "its vocab (`ĠCla ude` -> `ĠClaude`; id 40559 holds `ĠLLMProvider`), so the `tokenizers` library refuses",
            "to load its tokenizer.json (the Rust crate has the same check). The gpt2 ids were produced with",
            "transformers' `GPT2Tokenizer(vocab.json, merges.txt)` minus the dangling merge(s), which no test",
            "text can hit (see `_meta`). They match real GPT-2 ids (e.g. `Hello world` -> [15496, 995]).",
        ]
    (FIXTURES / "README.md").write_text("\n".join(lines))


def main():
    FIXTURES.mkdir(parents=True, exist_ok=True)
    MODELS.mkdir(parents=True, exist_ok=True)
    print("versions:", VERSIONS, "native config layout:", NATIVE_LAYOUT)
    infos = [make_fixture(*spec) for spec in fixture_specs()]
    layouts = {i["layout"] for i in infos}
    if layouts != {"4.x", "5.x"}:
        fail(f"fixtures must cover both config layouts, got {layouts}")
    tiny_dir, raw_tok = make_tiny_model()
    gpt2_meta = tokenizer_cases(tiny_dir, raw_tok)
    write_readme(infos, gpt2_meta)
    print("done")


if __name__ == "__main__":
    main()
