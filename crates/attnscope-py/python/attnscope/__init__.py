"""attnscope in-process: load a Hugging Face causal LM once, run prompts with exact attention capture,
and get numpy arrays and pyarrow tables back without going through files.

    import attnscope
    m = attnscope.load("../shared/models/stories260K")
    r = m.run(["Once upon a time", "The cat sat"], capture="all")
    w = r.attention(seq=0)            # numpy [layers, heads, T, T], a view of the engine's buffer
    r.stats.to_pandas()               # per (seq, layer, head, query slot, metric)
    r.save("runs/demo")               # the run directory `attnscope run` writes
    attnscope.open_run("runs/demo")   # back into the same kind of object

The numbers are those of `attnscope run` for the same inputs and settings (same engine, same code).
"""

from ._attnscope import AttnscopeError, __version__, set_threads, threads
from ._model import Model, Tokens, load
from ._run import Run, open_run

__all__ = [
    "AttnscopeError",
    "Model",
    "Run",
    "Tokens",
    "__version__",
    "load",
    "open_run",
    "set_threads",
    "threads",
]
