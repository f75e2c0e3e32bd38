"""Settings and helpers shared by scripts/make_golden.py and the modules it is split into (golden_tiny.py:
the tiny default model and the tokenizer cases; golden_readme.py: tests/fixtures/README.md). Importing it
fixes torch to one deterministic thread, as every golden needs."""

import hashlib
import os
import shutil
import sys
from pathlib import Path

import safetensors
import tokenizers
import torch
import transformers

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


def clean_dir(d):
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
