"""train.compile: torch.compile of the model through DeepSpeed's engine.

`engine.compile()` compiles the engine's module in place (`nn.Module.compile`): parameter names, DeepSpeed's
hooks and ZeRO partitioning, checkpoints (resuming a compiled run eagerly, or the reverse) and exports stay
those of the eager module. Compiling before `deepspeed.initialize` (`torch.compile(model)`) would hand
DeepSpeed an OptimizedModule wrapper whose state-dict keys all carry an `_orig_mod.` prefix. Only the
model's forward (and its backward, through AOTAutograd) is compiled; the engine's gradient reduction and
optimizer step run eagerly around it.

Shapes: a word batch's data-dependent sizes arrive as Python ints (`sizes`, a BatchSizes counted by the
loader's collate), so the packed layout traces without a graph break. They change with every batch, so
they are marked dynamic from the first compile (train.compile_dynamic None or true): torch's automatic
dynamic shapes would mark each count only after it changed, one recompile per count. Breaks that remain:
the bucketed and padded layouts (which words fall in each width is data-dependent) and a batch without
`sizes` (its counts are read from the tensors: one break).
"""
from __future__ import annotations

import torch

SIZES_SOURCES = r"L\['sizes'\]\..*"  # dynamo's name of the forward's `sizes` argument's fields


def mark_batch_sizes_dynamic() -> None:
    """Every field of a forward's `sizes` argument is a dynamic int from the first compile (process-wide)."""
    sources = [s for s in torch.compiler.config.dynamic_sources.split(",") if s]
    if SIZES_SOURCES not in sources:
        torch.compiler.config.dynamic_sources = ",".join([*sources, SIZES_SOURCES])


def check_backend(backend: str) -> None:
    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        usual = [*torch._dynamo.list_backends(), "aot_eager", "eager"]
        raise ValueError(f"train.compile_backend={backend!r} is not a torch.compile backend (e.g. {', '.join(usual)})")


def compile_engine(engine, t) -> None:
    """Compile `engine`'s module as the train section says (train.compile, compile_backend, compile_dynamic);
    nothing if train.compile is false. The compilation itself happens at the first forward."""
    if not t.compile:
        return
    check_backend(t.compile_backend)
    if t.compile_dynamic is not False:
        mark_batch_sizes_dynamic()
    engine.compile(backend=t.compile_backend, compile_kwargs={"dynamic": t.compile_dynamic})
