"""When scheduled evaluation hooks fall due (pretrain/evaluation/hooks.py EvalSchedule)."""
import pytest

import pretrain.evaluation.hooks as hooks
from pretrain.evaluation.hooks import EvalSchedule, default_hooks, load_callable
from schema import EvalHookConfig


def test_step_schedules_and_the_last_step():
    schedule = EvalSchedule([EvalHookConfig(kind="val_bpb", every_steps=4),
                             EvalHookConfig(kind="samples", every_steps=6),
                             EvalHookConfig(kind="word_acc", on_checkpoint=True)], total_steps=14)
    due = {step: schedule.due(step, [], after_checkpoint=False) for step in range(1, 15)}
    assert {s: d for s, d in due.items() if d} == {4: [0], 6: [1], 8: [0], 12: [0, 1], 14: [0, 1, 2]}
    assert schedule.due(5, [], after_checkpoint=True) == [2]
    assert schedule.due(8, [], after_checkpoint=True) == [0, 2]


def test_default_hooks_share_one_schedule():
    schedule = EvalSchedule(default_hooks(5), total_steps=12)
    assert [h.kind for h in schedule.hooks] == ["val_bpb", "word_acc", "rare_word_acc"]
    assert [s for s in range(1, 13) if schedule.due(s, [], False)] == [5, 10, 12]
    assert schedule.due(10, [], False) == [0, 1, 2]


def test_timed_hooks_follow_rank0s_flags_and_restart_their_clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(hooks.time, "monotonic", lambda: now[0])
    schedule = EvalSchedule([EvalHookConfig(kind="val_bpb", every_steps=100),
                             EvalHookConfig(kind="word_acc", every_minutes=2.0),
                             EvalHookConfig(kind="samples", every_minutes=0.5)], total_steps=1000)
    assert schedule.timed == [1, 2]
    now[0] += 29
    assert schedule.time_flags() == [0.0, 0.0]
    now[0] += 2  # 31 s
    flags = schedule.time_flags()
    assert flags == [0.0, 1.0]
    assert schedule.due(7, flags, False) == [2]
    assert schedule.time_flags() == [0.0, 0.0]  # run at 31 s: its next turn is 30 s later
    now[0] += 90  # 121 s
    assert schedule.time_flags() == [1.0, 1.0]
    # the flags decide, not this rank's clock (another rank's flags come from rank 0 via the all-reduce)
    assert schedule.due(8, [0.0, 0.0], False) == []
    assert schedule.due(9, [1.0, 0.0], False) == [1]


def test_callable_targets_resolve_at_construction():
    schedule = EvalSchedule([EvalHookConfig(kind="callable", target="json:dumps", every_steps=1)], 3)
    import json

    assert schedule.callables == {0: json.dumps}
    with pytest.raises(ValueError, match="cannot be imported"):
        load_callable("json:no_such_function")
    with pytest.raises(ValueError, match="cannot be imported"):
        load_callable("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="not callable"):
        load_callable("json:__name__")
