"""Which checkpoint a run resumes from, and which ones retention keeps, on hand-made checkpoint folders
(pretrain/checkpoint/store.py and manifest.py; no DeepSpeed, no torch.distributed)."""
import json

import pytest

from pretrain import run_dir
from pretrain.checkpoint import manifest as files
from pretrain.checkpoint.store import find_latest, resolve_resume, select_for_resume, verify


def make_checkpoint(root, step, complete=True, with_manifest=True, payload=b"weights"):
    folder = root / run_dir.tag_for(step)
    (folder / "sub").mkdir(parents=True)
    (folder / "mp_rank_00_model_states.pt").write_bytes(payload * (step + 1))
    (folder / "sub" / "rng_rank00000.pt").write_bytes(b"rng%d" % step)
    if with_manifest:
        names = files.payload_files(folder)
        files.write_manifest(folder, step, 1, files.describe_files(folder, names))
    if complete:
        (folder / run_dir.COMPLETE).write_text(json.dumps({"step": step, "world_size": 1}))
    return folder


def test_checkpoint_selection_skips_incomplete(tmp_path):
    root = tmp_path / "checkpoints"
    for step, complete in ((2, True), (4, True), (6, False)):
        make_checkpoint(root, step, complete)
    (root / run_dir.LATEST).write_text("step_00000006")  # the pointer names a checkpoint a rank never finished
    assert find_latest(root) == root / "step_00000004"
    assert resolve_resume("auto", root) == root / "step_00000004"
    assert resolve_resume(str(root / "step_00000002"), root) == root / "step_00000002"
    assert resolve_resume(None, root) is None and resolve_resume("none", root) is None
    assert resolve_resume("auto", tmp_path / "none") is None
    with pytest.raises(ValueError, match="incomplete"):
        resolve_resume(str(root / "step_00000006"), root)
    with pytest.raises(FileNotFoundError):
        resolve_resume(str(root / "step_00000008"), root)


def test_manifest_lists_payload_and_verify_finds_damage(tmp_path):
    folder = make_checkpoint(tmp_path, 3)
    manifest = files.read_manifest(folder)
    assert sorted(manifest["files"]) == ["mp_rank_00_model_states.pt", "sub/rng_rank00000.pt"]
    assert manifest["files"]["sub/rng_rank00000.pt"]["bytes"] == 4
    assert verify(folder) == []
    weights = folder / "mp_rank_00_model_states.pt"
    weights.write_bytes(weights.read_bytes()[::-1])  # same size, other bytes
    assert verify(folder, "size") == []
    assert verify(folder, "sha256") == ["mp_rank_00_model_states.pt: sha256 differs from the manifest"]
    (folder / "sub" / "rng_rank00000.pt").unlink()
    assert verify(folder, "size") == ["sub/rng_rank00000.pt: missing"]
    assert verify(folder, "none") == []
    # each rank checks its share of the files; together they cover all
    shares = [verify(folder, "sha256", (rank, 2)) for rank in range(2)]
    assert sorted(p for share in shares for p in share) == sorted(verify(folder, "sha256"))
    assert verify(make_checkpoint(tmp_path / "old", 1, with_manifest=False)) == []  # before manifests existed


def test_select_for_resume_sets_a_corrupt_checkpoint_aside(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    for step in (2, 4, 6):
        make_checkpoint(root, step)
    newest = root / "step_00000006" / "mp_rank_00_model_states.pt"
    newest.write_bytes(newest.read_bytes()[:-3])  # truncated
    messages = []
    assert select_for_resume(root, report=messages.append) == root / "step_00000004"
    assert len(messages) == 1 and "step_00000006 failed verification" in messages[0]
    assert "mp_rank_00_model_states.pt" in messages[0]
    assert sorted(p.name for p in root.iterdir()) == ["corrupt-step_00000006", "step_00000002", "step_00000004"]
    [report] = (tmp_path / "run" / "failures").glob("corrupt-checkpoint-*.json")
    assert json.loads(report.read_text())["checkpoint"] == str(root / "step_00000006")
    assert find_latest(root) == root / "step_00000004"  # the corrupt one is no checkpoint any more
    assert select_for_resume(root, max_step=3, report=messages.append) == root / "step_00000002"
    assert select_for_resume(tmp_path / "empty") is None


def test_select_for_resume_refuses_to_start_over_when_none_verifies(tmp_path):
    root = tmp_path / "run" / "checkpoints"
    for step in (1, 2):
        (make_checkpoint(root, step) / "sub" / "rng_rank00000.pt").write_bytes(b"x")
    with pytest.raises(RuntimeError, match="every checkpoint under .* failed verification"):
        select_for_resume(root, report=lambda message: None)
    assert sorted(p.name for p in root.iterdir()) == ["corrupt-step_00000001", "corrupt-step_00000002"]


def test_retention_keeps_last_k_and_permanent(tmp_path):
    for step in range(1, 11):
        folder = tmp_path / run_dir.tag_for(step)
        folder.mkdir()
        (folder / run_dir.COMPLETE).write_text("{}")
    (tmp_path / "step_00000012").mkdir()  # unpublished (no run_dir.COMPLETE): neither counted nor deleted
    (tmp_path / ".tmp-step_00000011").mkdir()  # a save a crash interrupted
    deleted = files.apply_retention(tmp_path, keep_last=2, keep_every=4)
    assert [run_dir.step_of(p) for p in deleted] == [1, 2, 3, 5, 6, 7]
    assert [run_dir.step_of(p) for p in run_dir.published(tmp_path)] == [4, 8, 9, 10]
    assert (tmp_path / "step_00000012").is_dir()
    assert files.remove_stale_temporaries(tmp_path) == [".tmp-step_00000011"]
    assert files.remove_stale_temporaries(tmp_path) == []
    assert files.apply_retention(tmp_path, keep_last=1, keep_every=None) == [tmp_path / f"step_0000000{s}"
                                                                            for s in (4, 8, 9)]
    assert [p.name for p in run_dir.published(tmp_path)] == ["step_00000010"]


def test_checkpoint_names():
    assert run_dir.tag_for(12) == "step_00000012" and run_dir.tmp_tag_for(12) == ".tmp-step_00000012"
    assert run_dir.step_of("/x/step_00000012") == 12
    assert run_dir.step_of(".tmp-step_00000012") is None and run_dir.step_of("corrupt-step_00000012") is None
