"""The LR schedule and the micro-steps per optimizer step (pretrain/training/engine.py)."""
import math

import pytest

from schema import TrainConfig
from pretrain.training.engine import grad_accum_for, warmup_cosine


def test_warmup_is_linear_from_the_first_step():
    assert [warmup_cosine(s, 4, 100, 0.1) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_decays_to_min_ratio_and_stays():
    warmup, total, floor = 10, 110, 0.1
    assert warmup_cosine(warmup, warmup, total, floor) == pytest.approx(1.0)  # the peak, right after warmup
    assert warmup_cosine(60, warmup, total, floor) == pytest.approx(floor + (1 - floor) * 0.5)  # half way
    quarter = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert warmup_cosine(35, warmup, total, floor) == pytest.approx(quarter)
    assert warmup_cosine(total, warmup, total, floor) == pytest.approx(floor)
    assert warmup_cosine(total + 50, warmup, total, floor) == pytest.approx(floor)  # past the end: the floor
    values = [warmup_cosine(s, warmup, total, floor) for s in range(warmup, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises after warmup


def test_no_warmup_and_degenerate_lengths():
    assert warmup_cosine(0, 0, 10, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(10, 0, 10, 0.0) == pytest.approx(0.0)
    assert warmup_cosine(5, 5, 5, 0.2) == pytest.approx(1.0)  # total == warmup: no division by zero
    assert warmup_cosine(6, 5, 5, 0.2) == pytest.approx(0.2)


def test_grad_accum_is_set_or_derived_from_the_global_batch():
    assert grad_accum_for(TrainConfig(micro_batch_size=4, grad_accum=3), world=8) == 3
    fixed = TrainConfig(micro_batch_size=4, grad_accum=3, global_batch_size=16)  # grad_accum ignored
    assert [grad_accum_for(fixed, w) for w in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(ValueError, match=r"global_batch_size=16 is not a multiple of micro_batch_size \(4\) x "
                                         r"processes \(3\)"):
        grad_accum_for(fixed, 3)
    with pytest.raises(ValueError, match="not a multiple"):
        grad_accum_for(fixed, 8)  # 32 samples per micro-step: more than the global batch
