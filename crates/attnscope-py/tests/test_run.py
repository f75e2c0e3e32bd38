"""Model.run: inputs, captures, views, tables, logits, generation and the errors bad input gets."""

from __future__ import annotations

import gc

import numpy as np
import pyarrow as pa
import pytest

PROMPTS = ["Once upon a time", "The little dog ran to the park"]


def test_weights_are_read_only_views_that_keep_the_buffer_alive(tiny):
    r = tiny.run(PROMPTS, capture="all")
    w = r.attention(1)
    t = len(tiny.tokenize(PROMPTS[1]))
    assert w.shape == (4, 8, t, t) and w.dtype == np.float32
    assert not w.flags.writeable and not w.flags.owndata
    assert np.shares_memory(w, r.attention(1))  # the same engine buffer, not a fresh copy
    assert np.shares_memory(r.attention(1, layer=2), w)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(w, k=1) == 0)  # causal
    expected = w.copy()
    del r
    gc.collect()
    np.testing.assert_array_equal(w, expected)  # still valid after the result is gone


def test_layer_and_head_selection_say_which_indices_the_axes_hold(tiny):
    full = tiny.run(PROMPTS[0], capture="weights")
    part = tiny.run(PROMPTS[0], capture="weights", layers=[1, 3], heads="0,5-6")
    assert part.layers == [1, 3] and part.heads == [0, 5, 6]
    w = part.attention(0)
    assert w.shape[:2] == (2, 3)
    # A selection reorders the engine's parallel work, so the last bits may differ from a full capture.
    np.testing.assert_allclose(w, full.attention(0)[[1, 3]][:, [0, 5, 6]], atol=2e-6, rtol=0)
    np.testing.assert_allclose(part.attention(0, layer=3), full.attention(0, layer=3)[[0, 5, 6]],
                               atol=2e-6, rtol=0)
    with pytest.raises(ValueError, match="layer: 2 was not captured"):
        part.attention(0, layer=2)


def test_stats_tables_are_arrow_and_match_the_weights(tiny):
    r = tiny.run(PROMPTS, capture="all")
    stats = r.stats
    assert isinstance(stats, pa.Table)
    assert stats.column_names == ["seq", "layer", "head", "slot", "metric", "value"]
    df = stats.to_pandas()
    ent = df[(df.metric == "entropy") & (df.seq == 0) & (df.layer == 2) & (df["head"] == 5)]
    w = r.attention(0, layer=2)[5].astype(np.float64)
    want = -(np.where(w > 0, w * np.log(np.where(w > 0, w, 1)), 0)).sum(-1)
    np.testing.assert_allclose(ent.sort_values("slot").value.to_numpy(), want, atol=2e-5)
    assert set(r.received.column_names) >= {"received_sum", "received_mean", "visible_rows"}
    assert r.distance.num_rows > 0
    tokens = r.tokens.to_pandas()
    assert list(tokens.seq.unique()) == [0, 1] and (tokens.kind == "prompt").all()
    with pytest.raises(ValueError, match="steps"):
        r.steps  # nothing was generated


def test_no_capture_has_tokens_only(tiny):
    r = tiny.run(PROMPTS[0], capture="none")
    assert r.layers == [] and r.tokens.num_rows == len(tiny.tokenize(PROMPTS[0]))
    with pytest.raises(ValueError, match="no weights"):
        r.attention(0)
    with pytest.raises(ValueError, match="stats"):
        r.stats


def test_inputs_as_token_ids_and_dicts_with_positions_and_groups(tiny):
    ids = tiny.tokenize("Once upon a time there was").ids
    a = tiny.run(ids, capture="weights")
    b = tiny.run([{"token_ids": ids}], capture="weights")
    c = tiny.run([np.array(ids)], capture="weights")
    np.testing.assert_array_equal(a.attention(0), b.attention(0))
    np.testing.assert_array_equal(a.attention(0), c.attention(0))
    n = len(ids)
    positions = list(range(n - 2)) + [n - 3, n - 3]
    groups = [-1] * (n - 2) + [0, 0]
    iso = tiny.run({"token_ids": ids, "positions": positions, "groups": groups,
                    "visibility": "isolated"}, capture="all")
    w = iso.attention(0)
    assert np.all(w[:, :, n - 1, n - 2] == 0)  # isolated: a set member cannot see the other one
    tok = iso.tokens.to_pandas()
    assert tok.position.tolist() == positions and tok.group.tolist() == groups
    vis = tiny.run({"token_ids": ids, "positions": positions, "groups": groups}, capture="weights",
                   visibility="visible")
    assert np.all(vis.attention(0)[:, :, n - 1, n - 2] > 0)


def test_logits_last_and_all(tiny):
    r = tiny.run(PROMPTS[0], capture="none", logits="all")
    every = r.logits(0)
    assert every.shape == (len(tiny.tokenize(PROMPTS[0])), 512) and not every.flags.writeable
    last = tiny.run(PROMPTS[0], capture="none", logits="last").logits(0)
    np.testing.assert_array_equal(last, every[-1:])
    with pytest.raises(ValueError, match="no logits"):
        tiny.run(PROMPTS[0]).logits(0)


def test_generation_matches_its_own_greedy_logits(tiny):
    r = tiny.run(PROMPTS[0], generate=6, capture="stats", logits="last", ignore_eos=True)
    tok = r.tokens.to_pandas()
    generated = tok[tok.kind == "generated"].token_id.tolist()
    assert len(generated) == 6
    assert generated[0] == int(np.argmax(r.logits(0)[-1]))
    assert r.generated_text(0) and r.inputs[0]["generated_tokens"] == 6
    assert r.steps.num_rows > 0
    again = tiny.run(PROMPTS[0], generate=6, capture="none", ignore_eos=True)
    assert again.tokens.column("token_id").to_pylist() == tok.token_id.tolist()  # deterministic
    s1 = tiny.run(PROMPTS[0], generate=8, temperature=1.0, seed=7, capture="none", ignore_eos=True)
    s2 = tiny.run(PROMPTS[0], generate=8, temperature=1.0, seed=7, capture="none", ignore_eos=True)
    assert s1.tokens.equals(s2.tokens)  # a seed reproduces sampling


def test_parallel_generation_emits_sets(tiny):
    r = tiny.run(PROMPTS[0], generate=6, capture="stats", parallel_threshold=0.01, parallel_max=3,
                 ignore_eos=True, visibility="isolated")
    tok = r.tokens.to_pandas()
    assert (tok.kind == "parallel").any()


def test_f16_weights(tiny):
    r32 = tiny.run(PROMPTS[0], capture="weights")
    r16 = tiny.run(PROMPTS[0], capture="weights", weights_dtype="f16")
    w16 = r16.attention(0)
    assert w16.dtype == np.float16
    np.testing.assert_allclose(w16.astype(np.float32), r32.attention(0), atol=1e-3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(inputs=[]), "nothing to run"),
    (dict(inputs=[""]), "empty prompt"),
    (dict(inputs=[{"token_ids": [1, 2], "bogus": 1}]), "bogus"),
    (dict(inputs=[{"token_ids": [1, 99999]}]), "99999|vocab"),
    (dict(inputs=[{"token_ids": [1, 2, 3], "positions": [0, 1]}]), "positions"),
    (dict(inputs="x", capture="everything"), "capture"),
    (dict(inputs="x", layers=[9]), "layers"),
    (dict(inputs="x", heads="0-99"), "heads"),
    (dict(inputs="x", generate=-1), "generate"),
    (dict(inputs="x", temperature=-1.0), "temperature"),
    (dict(inputs="x", top_p=0.0), "top-p|top_p"),
    (dict(inputs="x", parallel_threshold=1.5), "parallel"),
    (dict(inputs="x", visibility="sideways"), "visibility"),
    (dict(inputs="x", weights_dtype="f8"), "weights_dtype"),
    (dict(inputs="x", logits="some"), "logits"),
    (dict(inputs=[1.5, 2.5]), "inputs"),
])
def test_bad_input_is_a_value_error(tiny, kwargs, match):
    inputs = kwargs.pop("inputs")
    with pytest.raises(ValueError, match=match):
        tiny.run(inputs, **kwargs)
    tiny.run("still works", capture="none")


def test_a_prompt_beyond_the_context_is_refused(tiny):
    with pytest.raises(ValueError, match="context|max_position"):
        tiny.run([{"token_ids": [5] * 1100}], capture="none")


def test_out_of_range_sequence_index(tiny):
    r = tiny.run(PROMPTS[0], capture="weights")
    with pytest.raises(IndexError, match="seq"):
        r.attention(3)
