"""`export_checkpoint` refuses what is not a complete checkpoint, before writing anything."""
import pytest


def test_incomplete_or_missing_checkpoint_refused(tmp_path):
    from pretrain.inference.export import export_checkpoint

    half = tmp_path / "checkpoints" / "step_00000004"
    half.mkdir(parents=True)
    with pytest.raises(ValueError, match="incomplete"):
        export_checkpoint(half, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        export_checkpoint(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
