"""`attnscope.load` and `attnscope.Model`: a model kept loaded between calls."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import pyarrow as pa

from . import _attnscope
from ._run import Run
from ._tables import to_arrow

# What `run` accepts as inputs: a prompt, several prompts, token ids, several token-id lists, or
# sequences given as dicts with token_ids and optional positions, groups and visibility.
Inputs = Union[str, Sequence[str], Sequence[int], Sequence[Sequence[int]], Dict[str, Any],
               Sequence[Dict[str, Any]]]
Indices = Union[None, int, str, Iterable[int]]

SEQUENCE_KEYS = ("token_ids", "positions", "groups", "visibility")


@dataclass(frozen=True)
class Tokens:
    """A text as the model's tokenizer splits it: ids (BOS included as `run` adds it), the vocabulary
    string of each, and `(start, end)` character offsets into `text` (`text[start:end]`; `(0, 0)` for
    an added BOS)."""

    text: str
    ids: List[int]
    pieces: List[str]
    offsets: List[Tuple[int, int]]

    def __len__(self) -> int:
        return len(self.ids)

    def span(self, i: int) -> str:
        """The part of `text` token `i` covers."""
        start, end = self.offsets[i]
        return self.text[start:end]

    def find(self, word: str) -> List[int]:
        """Indices of the tokens that overlap the first occurrence of `word` in the text ([] if absent)."""
        start = self.text.find(word)
        if start < 0:
            return []
        end = start + len(word)
        return [i for i, (s, e) in enumerate(self.offsets) if s < end and e > start and e > s]


def load(path: Union[str, os.PathLike], device: str = "auto", dtype: Optional[str] = None,
         allow_unused: bool = False) -> "Model":
    """Loads a Hugging Face model directory (config.json, safetensors weights, tokenizer) and places
    it: `device` is "auto" (GPU 0 when usable, else the CPU), "cpu", "cuda" or "cuda:N"; `dtype` is
    None/"auto" (bf16 on a GPU, exact f32 on the CPU), "f32", "bf16" or "f16". Raises
    FileNotFoundError / OSError for files, ValueError for a bad config, weights or option."""
    native = _attnscope.Session.load(os.fspath(path), device=device, dtype=dtype or "auto",
                                     allow_unused=allow_unused)
    return Model(native)


class Model:
    """A loaded model. Create it with `attnscope.load`."""

    def __init__(self, native: "_attnscope.Session"):
        self._native = native
        self._config: Optional[Dict[str, Any]] = None

    def __repr__(self) -> str:
        return f"attnscope.Model({str(self.path)!r}, device={self.device!r}, dtype={self.dtype!r})"

    @property
    def path(self) -> str:
        """The model directory."""
        return os.fspath(self._native.path)

    @property
    def device(self) -> str:
        """Where it runs: "cpu" or "cuda:N"."""
        return self._native.device

    @property
    def dtype(self) -> str:
        """Compute/storage dtype as the manifest records it (e.g. "f32", "bf16")."""
        return self._native.dtype

    @property
    def notes(self) -> List[str]:
        """What loading wants you to hear (why "auto" chose the CPU, tokenizer repairs)."""
        return list(self._native.notes)

    @property
    def config(self) -> Dict[str, Any]:
        """The architecture as the engine read it: n_layers, n_heads, n_kv_heads, head_dim, ..."""
        if self._config is None:
            self._config = self._native.config()
        return self._config

    def tokenize(self, text: str) -> Tokens:
        """Splits `text` as `run` would: ids, pieces and character offsets (see `Tokens`)."""
        ids, pieces, offsets = self._native.tokenize(text)
        return Tokens(text, list(ids), list(pieces), [tuple(o) for o in offsets])

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids (special tokens kept)."""
        return self._native.decode([int(i) for i in ids])

    def run(self, inputs: Inputs, capture: Union[str, Sequence[str]] = "stats", layers: Indices = None,
            heads: Indices = None, generate: int = 0, *, temperature: float = 0.0, top_k: int = 0,
            top_p: float = 1.0, seed: int = 0, ignore_eos: bool = False,
            parallel_threshold: Optional[float] = None, parallel_max: int = 5,
            set_distribution: str = "last", visibility: Optional[str] = None,
            weights_dtype: str = "f32", logits: Union[None, bool, str] = None) -> Run:
        """Runs `inputs` with capture and optional generation, as `attnscope run` does.

        inputs: a prompt (str), a list of prompts, token ids (list of int), a list of token-id lists,
            or sequences as dicts {"token_ids", "positions", "groups", "visibility"} (the `--input` spec).
        capture: "none", "stats" (default), "weights", "all", or a list such as ["weights", "stats"].
        layers / heads: which layers and query heads to capture: an index, a list, a range or a string
            such as "0,3,8-11" (default all).
        generate: tokens to generate after each prompt; temperature (0 = greedy), top_k, top_p, seed and
            ignore_eos as for the CLI.
        parallel_threshold / parallel_max / set_distribution: TEMPO-style parallel sets.
        visibility: "visible" or "isolated", overriding every sequence's.
        weights_dtype: "f32" or "f16" storage of the captured weights.
        logits: None, "last" (the row the first generated token comes from) or "all" (every prompt row),
            `True` meaning "all".

        Ctrl-C interrupts between steps (KeyboardInterrupt); the model stays usable.
        """
        prompts, sequences = _normalise_inputs(inputs)
        native = self._native.run(
            prompts=prompts,
            sequences_json=None if sequences is None else json.dumps({"sequences": sequences}),
            capture=capture if isinstance(capture, str) else ",".join(capture),
            layers=_indices("layers", layers),
            heads=_indices("heads", heads),
            weights_dtype=weights_dtype,
            generate=_count("generate", generate),
            temperature=float(temperature),
            top_k=_count("top_k", top_k),
            top_p=float(top_p),
            seed=_count("seed", seed),
            ignore_eos=bool(ignore_eos),
            parallel_threshold=None if parallel_threshold is None else float(parallel_threshold),
            parallel_max=_count("parallel_max", parallel_max),
            set_distribution=set_distribution,
            visibility=visibility,
            logits=_logits(logits),
        )
        return Run._from_native(native)

    def ablate(self, prompt: Union[str, Sequence[int], Dict[str, Any]], slots: Indices,
               layers: Indices = None, mode: str = "zero", replace_with: Optional[int] = None,
               target: Optional[str] = None, target_ids: Optional[Iterable[int]] = None,
               continuation: int = 10) -> pa.Table:
        """Alters the keys/values of prompt `slots` at `layers` (default all) and scores target tokens
        with and without it, as `attnscope ablate` does. `mode`: "zero", "mean" or "replace" (with
        `replace_with` = source slot). Targets: `target` text, `target_ids`, or else the model's own
        greedy continuation of `continuation` tokens. Returns the ablation table (target_index,
        token_id, token, logp_base, logp_ablated, delta); its schema metadata holds the totals, slots,
        layers and mode (`table.schema.metadata[b"attnscope"]`, JSON)."""
        text, sequence = None, None
        if isinstance(prompt, str):
            text = prompt
        else:
            prompts, sequences = _normalise_inputs(prompt)
            if prompts is not None or sequences is None or len(sequences) != 1:
                raise ValueError("prompt: ablate takes one text or one sequence")
            sequence = json.dumps({"sequences": sequences})
        columns, summary = self._native.ablate(
            prompt=text, sequence_json=sequence, slots=_indices("slots", slots),
            layers=_indices("layers", layers), mode=mode, replace_with=replace_with, target=target,
            target_ids=None if target_ids is None else ",".join(str(int(t)) for t in target_ids),
            continuation=_count("continuation", continuation))
        table = to_arrow(columns)
        return table.replace_schema_metadata({"attnscope": json.dumps(summary)})


def _normalise_inputs(inputs: Inputs) -> Tuple[Optional[List[str]], Optional[List[Dict[str, Any]]]]:
    """(prompts, None) or (None, sequences as --input dicts)."""
    if isinstance(inputs, str):
        return [inputs], None
    if isinstance(inputs, dict):
        return None, [_sequence_dict(inputs, 0)]
    if hasattr(inputs, "tolist") and not isinstance(inputs, (list, tuple)):
        inputs = inputs.tolist()
    items = list(inputs)
    if not items:
        raise ValueError("inputs: nothing to run (an empty list)")
    if all(isinstance(x, str) for x in items):
        return items, None
    if all(_is_int(x) for x in items):
        return None, [{"token_ids": [int(x) for x in items]}]
    sequences = []
    for i, x in enumerate(items):
        if isinstance(x, dict):
            sequences.append(_sequence_dict(x, i))
        elif hasattr(x, "tolist") or isinstance(x, (list, tuple)):
            ids = x.tolist() if hasattr(x, "tolist") else list(x)
            if not all(_is_int(t) for t in ids):
                raise ValueError(f"inputs[{i}]: token ids must be integers")
            sequences.append({"token_ids": [int(t) for t in ids]})
        else:
            raise ValueError(f"inputs[{i}]: expected a prompt, a token-id list or a dict, "
                             f"not {type(x).__name__}")
    return None, sequences


def _sequence_dict(d: Dict[str, Any], i: int) -> Dict[str, Any]:
    unknown = [k for k in d if k not in SEQUENCE_KEYS]
    if unknown:
        raise ValueError(f"inputs[{i}]: unknown key {unknown[0]!r} (expected one of "
                         f"{', '.join(SEQUENCE_KEYS)})")
    out = {}
    for k, v in d.items():
        out[k] = v.tolist() if hasattr(v, "tolist") else v
    return out


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) or type(x).__name__.startswith(("int", "uint"))


def _indices(name: str, value: Indices) -> Optional[str]:
    """An index selection as the engine's list syntax ("0,3,8-11")."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if _is_int(value):
        value = [value]
    items = list(value)
    if not all(_is_int(v) for v in items):
        raise ValueError(f"{name}: expected integers, a range or a string such as '0,3,8-11'")
    if any(int(v) < 0 for v in items):
        raise ValueError(f"{name}: indices must be ≥ 0")
    return ",".join(str(int(v)) for v in items)


def _logits(value: Union[None, bool, str]) -> str:
    """`logits=` as the engine's none / last / all (True means all)."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "all"
    return value


def _count(name: str, value: Any) -> int:
    if not _is_int(value) or int(value) < 0:
        raise ValueError(f"{name}: expected a non-negative integer, not {value!r}")
    return int(value)
