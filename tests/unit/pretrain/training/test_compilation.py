"""train.compile's set-up (pretrain/training/compilation.py): what reaches DeepSpeed's engine.compile. That the
compiled model computes what the eager one does: unit/pretrain/models/test_compile.py, integration/test_compiled_training.py."""
import pytest
import torch

from schema import TrainConfig
from pretrain.training.compilation import SIZES_SOURCES, compile_engine


class FakeEngine:
    def __init__(self):
        self.calls = []

    def compile(self, backend, compile_kwargs):
        self.calls.append((backend, compile_kwargs))


@pytest.fixture
def dynamic_sources():
    before = torch.compiler.config.dynamic_sources
    torch.compiler.config.dynamic_sources = "L['x']"
    yield
    torch.compiler.config.dynamic_sources = before


def test_off_by_default_and_settings_passed_through(dynamic_sources):
    engine = FakeEngine()
    compile_engine(engine, TrainConfig())
    assert engine.calls == [] and torch.compiler.config.dynamic_sources == "L['x']"
    for _ in range(2):
        compile_engine(engine, TrainConfig(compile=True, compile_backend="aot_eager", compile_dynamic=True))
    assert engine.calls == [("aot_eager", {"dynamic": True})] * 2
    assert torch.compiler.config.dynamic_sources == f"L['x'],{SIZES_SOURCES}"  # added once, others kept


def test_static_shapes_leave_the_counts_alone(dynamic_sources):
    engine = FakeEngine()
    compile_engine(engine, TrainConfig(compile=True, compile_dynamic=False))
    assert engine.calls == [("inductor", {"dynamic": False})] and torch.compiler.config.dynamic_sources == "L['x']"


def test_an_unknown_backend_is_named_with_its_key():
    with pytest.raises(ValueError, match=r"train\.compile_backend='inductr' is not a torch\.compile backend "
                                         r"\(e\.g\. .*inductor"):
        compile_engine(FakeEngine(), TrainConfig(compile=True, compile_backend="inductr"))
