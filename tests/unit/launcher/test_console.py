"""What reaches the console (launcher/console.py): wordpool's progress and messages, not the libraries'."""
import sys

from launcher.console import LoggedChild, is_progress


def test_progress_lines_pass_and_library_lines_do_not():
    shown = ["[train] step  10/300 [#....] loss 4.7", "[eval ] step   0/300 loss 5.58", "[attempt] step 0/6 restart=0",
             "[rollback_unavailable] step 5/7 skipped_in_a_row=3", "resumed from /r/checkpoints/step_00000004 at step 4",
             "warning: checkpoint /r/step_4 failed verification", "wordpool: hang detected on rank 1",
             "== 3/4 train: 2 ranks"]
    hidden = ["[rank0]: Traceback (most recent call last):", "[2026-12-02 00:16:02,147] [WARNING] [engine.py:2304] ****",
              "W1202 00:16:06.584000 19736 torch/distributed/run.py:792] Setting OMP_NUM_THREADS",
              "DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully",
              "rank 0: error: corrupt shard x", "2026-12-02 WARNING streaming: Directory exists and not empty",
              "  warnings.warn("]
    assert [line for line in shown if not is_progress(line)] == []
    assert [line for line in hidden if is_progress(line)] == []


def test_logged_child_keeps_everything_in_the_log_and_shows_progress(tmp_path, capsys):
    script = ("import sys; print('[train] step  1/2 loss 1.0'); print('DeepSpeed noise'); "
              "print('Traceback: boom', file=sys.stderr); print('warning: disk almost full', file=sys.stderr)")
    log = tmp_path / "logs" / "run.log"
    assert LoggedChild([sys.executable, "-c", script], log, show_all=False).wait() == 0
    out, err = capsys.readouterr()
    assert out == "[train] step  1/2 loss 1.0\n" and err == "warning: disk almost full\n"
    assert set(log.read_text().splitlines()) == {"[train] step  1/2 loss 1.0", "DeepSpeed noise", "Traceback: boom",
                                                 "warning: disk almost full"}
