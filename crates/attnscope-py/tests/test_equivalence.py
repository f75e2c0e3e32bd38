"""The same numbers as `attnscope run` (bit for bit) and as transformers (the golden fixtures, ≤ 1e-5);
save / open_run round trips."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import attnscope
from conftest import FIXTURES, GOLDEN_FIXTURES, SHARED, TINY, require_stories, run_cli

TABLES = ("tokens", "stats", "received", "distance", "steps", "step_groups")


def read_safetensors(path: Path) -> dict:
    """Every tensor of a safetensors file, as float32/float16 numpy arrays (no dependency)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + start:8 + n + end], dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def assert_runs_equal(a: attnscope.Run, b: attnscope.Run) -> None:
    assert len(a) == len(b) and a.layers == b.layers and a.heads == b.heads
    for seq in range(len(a)):
        if a.capture.get("weights"):
            wa, wb = a.attention(seq), b.attention(seq)
            assert wa.dtype == wb.dtype and wa.shape == wb.shape
            assert wa.tobytes() == wb.tobytes(), f"seq {seq}: weights differ"
    for name in TABLES:
        ta, tb = a._table(name), b._table(name)
        assert (ta is None) == (tb is None), name
        if ta is not None:
            assert ta.equals(tb), f"{name} differs"


@pytest.mark.parametrize("weights_dtype", ["f32", "f16"])
def test_run_equals_the_cli_bit_for_bit(tiny, cli, tmp_path, weights_dtype):
    prompts = ["Once upon a time", "She loved to play outside in the park"]
    out = tmp_path / "cli"
    args = ["run", "--model", str(TINY), "--device", "cpu", "--capture", "all", "--generate", "4",
            "--ignore-eos", "--heads", "1,4-5", "--layers", "0,2", "--weights-dtype", weights_dtype,
            "--quiet", "--out", str(out)]
    for p in prompts:
        args += ["--prompt", p]
    run_cli(cli, *args)
    from_cli = attnscope.open_run(out)
    r = tiny.run(prompts, capture="all", generate=4, ignore_eos=True, heads=[1, 4, 5], layers=[0, 2],
                 weights_dtype=weights_dtype)
    assert from_cli.heads == [1, 4, 5] and from_cli.layers == [0, 2]
    assert_runs_equal(r, from_cli)
    # save() writes the same files as the CLI: tables and tensors byte for byte.
    saved = Path(r.save(tmp_path / "py"))
    for name in [f"{t}.parquet" for t in TABLES] + ["attention.safetensors"]:
        assert (saved / name).read_bytes() == (out / name).read_bytes(), name
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["inputs"] == json.loads((out / "manifest.json").read_text())["inputs"]
    assert_runs_equal(attnscope.open_run(saved), r)


def test_stories_run_equals_the_cli(cli, tmp_path):
    stories = require_stories()
    prompt = "Once upon a time, there was a little dog named Max."
    out = tmp_path / "cli"
    run_cli(cli, "run", "--model", str(stories), "--device", "cpu", "--capture", "all", "--prompt",
            prompt, "--generate", "8", "--quiet", "--out", str(out))
    m = attnscope.load(stories, device="cpu")
    assert_runs_equal(m.run(prompt, capture="all", generate=8), attnscope.open_run(out))


def test_save_refuses_an_existing_directory_and_leaves_nothing_on_failure(tiny, tmp_path):
    r = tiny.run("Once upon a time", capture="all")
    target = tmp_path / "run"
    r.save(target)
    with pytest.raises(OSError, match="exists|overwrite"):
        r.save(target)
    r.save(target, overwrite=True)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="not a directory"):
        r.save(blocker / "run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "run"]


def test_open_run_rejects_what_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        attnscope.open_run(tmp_path)


def golden_cases(name: str):
    meta = json.loads((FIXTURES / name / "golden.json").read_text())
    tensors = read_safetensors(FIXTURES / name / "golden.safetensors")
    return meta, tensors


@pytest.mark.parametrize("name", GOLDEN_FIXTURES)
def test_attention_and_logits_equal_transformers_eager(name):
    meta, golden = golden_cases(name)
    m = attnscope.load(FIXTURES / name, device="cpu")
    worst = 0.0
    for case in meta["cases"]:
        seq = {"token_ids": case["input_ids"], "positions": case["position_ids"],
               "groups": case["groups"], "visibility": case["visibility"]}
        r = m.run(seq, capture="weights", logits="all")
        w = r.attention(0)
        for layer in range(meta["num_layers"]):
            want = golden[f"{case['name']}.attn.{layer}"]
            worst = max(worst, float(np.abs(w[layer] - want).max()))
        np.testing.assert_allclose(r.logits(0), golden[f"{case['name']}.logits"], atol=5e-5, rtol=0)
    print(f"{name}: max |attention - transformers| = {worst:.2e}")
    assert worst <= 1e-5


def test_stories_attention_equals_transformers_eager():
    stories = require_stories()
    meta = json.loads((SHARED / "golden" / "stories260K.json").read_text())
    golden = read_safetensors(SHARED / "golden" / "stories260K.safetensors")
    m = attnscope.load(stories, device="cpu")
    par = meta["parallel"]
    cases = {"": {"token_ids": meta["input_ids"]}}
    for mode in ("visible", "isolated"):
        cases[f"par_{mode}."] = {"token_ids": meta["input_ids"], "positions": par["position_ids"],
                                 "groups": par["groups"], "visibility": mode}
    worst = 0.0
    for prefix, seq in cases.items():
        r = m.run(seq, capture="weights", logits="all")
        np.testing.assert_allclose(r.logits(0), golden[f"{prefix}logits"], atol=5e-5, rtol=0)
        w = r.attention(0)
        for layer in range(meta["n_layers"]):
            worst = max(worst, float(np.abs(w[layer] - golden[f"{prefix}attn.{layer}"]).max()))
    print(f"stories260K: max |attention - transformers| = {worst:.2e}")
    assert worst <= 1e-5
    # The greedy continuation transformers gives, token for token.
    r = m.run([{"token_ids": meta["input_ids"]}], generate=len(golden["greedy_ids"]), capture="none",
              ignore_eos=True)
    tok = r.tokens.to_pandas()
    assert tok[tok.kind == "generated"].token_id.tolist() == golden["greedy_ids"].astype(int).tolist()
