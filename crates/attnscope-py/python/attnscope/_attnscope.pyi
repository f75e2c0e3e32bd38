"""Type stubs of the native module (crates/attnscope-py/src). Users call the wrappers in
`attnscope` (`load`, `Model`, `Run`, `open_run`); these are what they call."""

from os import PathLike
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

__version__: str

class AttnscopeError(Exception):
    """An engine failure that is neither bad input (ValueError) nor a file problem (OSError)."""

def set_threads(n: int) -> None:
    """Sizes the engine's thread pool; only before the first computation."""

def threads() -> int:
    """The number of threads the engine computes with."""

def panic_for_tests() -> None:
    """Panics inside a guarded call (raises AttnscopeError); for the test suite."""

# A table as [(column name, numpy array | ("dict", int32 codes, distinct strings))].
Columns = List[Tuple[str, Any]]

class Session:
    path: PathLike
    device: str
    dtype: str
    notes: List[str]
    load_seconds: float
    @staticmethod
    def load(path: Union[str, PathLike], device: str = "auto", dtype: str = "auto",
             allow_unused: bool = False) -> "Session": ...
    def config(self) -> Dict[str, Any]: ...
    def tokenize(self, text: str) -> Tuple[List[int], List[str], List[Tuple[int, int]]]: ...
    def decode(self, ids: List[int]) -> str: ...
    def run(self, *, prompts: Optional[List[str]], sequences_json: Optional[str], capture: str,
            layers: Optional[str], heads: Optional[str], weights_dtype: str, generate: int,
            temperature: float, top_k: int, top_p: float, seed: int, ignore_eos: bool,
            parallel_threshold: Optional[float], parallel_max: int, set_distribution: str,
            visibility: Optional[str], logits: str) -> "RunResult": ...
    def ablate(self, *, prompt: Optional[str], sequence_json: Optional[str], slots: str,
               layers: Optional[str], mode: str, replace_with: Optional[int], target: Optional[str],
               target_ids: Optional[str], continuation: int) -> Tuple[Columns, Dict[str, Any]]: ...

class RunResult:
    n_sequences: int
    layers: List[int]
    heads: List[int]
    def n_slots(self, seq: int) -> int: ...
    def attention(self, seq: int) -> Optional[np.ndarray]: ...
    def logits(self, seq: int) -> Optional[np.ndarray]: ...
    def tables(self) -> Dict[str, Any]: ...
    def inputs(self) -> List[Dict[str, Any]]: ...
    def settings(self) -> Dict[str, Any]: ...
    def save(self, path: Union[str, PathLike], overwrite: bool = False) -> PathLike: ...
