"""Skipping bad updates (pretrain/training/update_guard.py): non-finite values always, spikes (loss and grad
norm both outliers) only after warmup and against enough history; the history adapts to a lasting shift;
the state survives a checkpoint."""
import math

import torch

from pretrain.training.update_guard import GuardedAdamW, StepGate, UpdateGuard


def test_update_guard_skips_spikes_only_after_history():
    guard = UpdateGuard(skip_nonfinite=True, outlier_sigma=6.0, window=50, min_history=5)
    assert guard.reason_to_skip(100.0, 100.0) is None  # no history yet: a high early loss is normal
    for loss in (3.0, 3.1, 2.9, 3.0, 3.05, 2.95):
        guard.record(loss, 1.0 + loss / 100, skipped=False)
    assert guard.reason_to_skip(3.2, 1.03) is None
    assert guard.reason_to_skip(9.0, 50.0) == "spike"  # loss and grad norm both far out
    assert guard.reason_to_skip(9.0, 1.03) is None  # a hard batch with an ordinary gradient is not a fault
    assert guard.reason_to_skip(3.0, 50.0) is None  # nor a grad-norm rise with a normal loss (clipping bounds it)
    assert guard.reason_to_skip(float("nan"), 1.0) == "nonfinite_loss"
    assert guard.reason_to_skip(3.0, float("inf")) == "nonfinite_grad_norm"
    assert guard.reason_to_skip(9.0, None) == "spike"  # no norm known: judged on the loss alone
    strict = UpdateGuard(True, 6.0, 50, 5, rule="loss_or_grad_norm")
    strict.load_state_dict(guard.state_dict())
    assert strict.reason_to_skip(9.0, 1.03) == "outlier_loss" and strict.reason_to_skip(3.0, 50.0) == "outlier_grad_norm"
    guard.record(9.0, 50.0, skipped=True)
    guard.record(float("nan"), 1.0, skipped=True)
    assert (guard.consecutive, guard.total) == (2, 2)
    assert list(guard.losses) == [3.0, 3.1, 2.9, 3.0, 3.05, 2.95, 9.0]  # finite values enter, skipped or not
    restored = UpdateGuard(True, 6.0, 50, 5)
    restored.load_state_dict(guard.state_dict())
    assert restored.state_dict() == guard.state_dict()


def test_no_step_is_judged_during_warmup():
    guard = UpdateGuard(True, 6.0, 50, 3, judge_after_step=10)
    for _ in range(5):
        guard.record(3.0, 1.0, skipped=False)
    assert guard.reason_to_skip(30.0, 100.0, step=10) is None
    assert guard.reason_to_skip(30.0, 100.0, step=11) == "spike"
    assert guard.reason_to_skip(float("nan"), 1.0, step=1) == "nonfinite_loss"  # non-finite: always


def test_history_adapts_to_a_lasting_rise():
    """Grad norm and loss step up to a new level and stay there (a new data mix, a phase of training):
    after a few steps the new level is the normal one, not an outlier forever."""
    guard = UpdateGuard(True, 3.0, window=20, min_history=5)
    for i in range(20):
        guard.record(2.0 + 0.01 * (i % 3), 0.5 + 0.01 * (i % 2), skipped=False)
    verdicts = []
    for _ in range(10):
        reason = guard.reason_to_skip(4.0, 2.0)
        verdicts.append(reason)
        guard.record(4.0, 2.0, skipped=reason is not None)
    assert verdicts[0] == "spike" and verdicts[-1] is None
    assert guard.consecutive == 0 and guard.total < 3  # never the streak that would roll the run back


def test_threshold_is_mean_plus_sigma_std_with_a_floor():
    guard = UpdateGuard(True, outlier_sigma=2.0, window=4, min_history=2)
    for loss in (1.0, 3.0):  # mean 2, std 1: threshold 4
        guard.record(loss, None, skipped=False)
    assert guard.reason_to_skip(3.99, None) is None and guard.reason_to_skip(4.01, None) == "spike"
    flat = UpdateGuard(True, outlier_sigma=2.0, window=4, min_history=2)
    for _ in range(3):
        flat.record(5.0, None, skipped=False)  # std 0: the floor is 1e-3 of the mean
    assert flat.reason_to_skip(5.0 + 0.0099, None) is None and flat.reason_to_skip(5.0 + 0.0101, None) == "spike"


def test_window_forgets_old_steps_and_a_success_resets_the_streak():
    guard = UpdateGuard(True, outlier_sigma=3.0, window=3, min_history=3)
    for loss in (100.0, 1.0, 1.0, 1.0):
        guard.record(loss, 1.0, skipped=False)
    assert list(guard.losses) == [1.0, 1.0, 1.0]
    assert guard.reason_to_skip(2.0, 2.0) == "spike"  # the early 100 no longer widens the spread
    guard.record(2.0, 2.0, skipped=True)
    guard.record(1.0, 1.0, skipped=False)
    assert (guard.consecutive, guard.total) == (0, 1)


def test_switches_turn_checks_off():
    lenient = UpdateGuard(skip_nonfinite=False, outlier_sigma=0.0, window=10, min_history=1)
    lenient.record(1.0, 1.0, skipped=False)
    assert lenient.reason_to_skip(float("nan"), 1.0) is None
    assert lenient.reason_to_skip(1e9, float("inf")) is None


def test_gated_optimizer_applies_only_allowed_updates():
    guard = UpdateGuard(True, 6.0, 10, 5)
    param = torch.nn.Parameter(torch.ones(3))
    opt = GuardedAdamW([param], lr=0.1)
    norms = iter([1.0, math.inf])
    opt.gate = StepGate(guard, lambda: next(norms))

    param.grad = torch.ones(3)
    opt.gate.arm(2.0)
    opt.step()
    assert opt.gate.verdict() == (None, 1.0)
    after_first = param.detach().clone()
    assert not torch.equal(after_first, torch.ones(3))

    opt.gate.arm(2.0)
    opt.step()
    assert opt.gate.verdict() == ("nonfinite_grad_norm", math.inf)
    assert torch.equal(param.detach(), after_first)  # skipped: the weights did not move

    opt.gate.arm(float("nan"))  # DeepSpeed skipped the step without asking: a skip all the same
    reason, norm = opt.gate.verdict()
    assert reason == "nonfinite_loss" and math.isnan(norm)
    opt.gate.arm(2.0)
    assert opt.gate.verdict()[0] == "nonfinite_grad_norm"


def test_a_real_spiky_but_converging_run_is_left_alone():
    """Replays a real run (tests/data/spiky_converging_run.json: compare's word-pooled run at the sweep's
    highest LR, which the old rule cut short): its grad norm jumps to several times its mean while the
    loss stays normal. The default guard skips nothing; the stricter rule would skip those steps."""
    import json
    from pathlib import Path

    trace = json.loads((Path(__file__).parents[3] / "data" / "spiky_converging_run.json").read_text())
    losses, norms = trace["loss"], trace["grad_norm"]
    assert losses[-1] < losses[0] / 3  # it converges

    def replay(rule: str) -> list[int]:
        guard = UpdateGuard(True, 6.0, 50, 20, rule=rule, judge_after_step=trace["warmup_steps"])
        skipped = []
        for step, (loss, norm) in enumerate(zip(losses, norms), start=1):
            reason = guard.reason_to_skip(loss, norm, step)
            guard.record(loss, norm, skipped=reason is not None)
            if reason:
                skipped.append(step)
        return skipped

    assert replay("loss_and_grad_norm") == []
    assert replay("loss_or_grad_norm")  # the spikes are real: the either-one rule flags them
