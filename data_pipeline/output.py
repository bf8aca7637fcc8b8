"""Where a prepare job's results go: a local folder, or an object-store URL (s3://…).

Work is always written to a local folder first — the output itself when it is local, a staging
folder on the worker's node when it is remote — and published file by file. A unit's marker is
published last, so a remote unit counts as done only once everything it wrote is there.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from data_pipeline.sources import filesystem_for, is_url


LOGS = "_logs"  # `wordpool prepare` logs library output here; never job output


def default_staging(url: str) -> Path:
    root = Path(os.environ.get("WORDPOOL_STAGING", Path.home() / ".cache" / "wordpool" / "staging"))
    return root / hashlib.sha256(url.encode()).hexdigest()[:16]


class OutputRoot:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.remote = is_url(url)
        self.local = default_staging(self.url) if self.remote else Path(url)

    # ---- remote side (no-ops or plain file operations for a local output) -----------------------
    def _fs(self):
        return filesystem_for(self.url)

    def exists(self, rel: str) -> bool:
        if not self.remote:
            return (self.local / rel).exists()
        import pyarrow.fs as pafs

        fs, root = self._fs()
        return fs.get_file_info(f"{root}/{rel}").type != pafs.FileType.NotFound

    def read_text(self, rel: str) -> str:
        if not self.remote:
            return (self.local / rel).read_text()
        fs, root = self._fs()
        with fs.open_input_stream(f"{root}/{rel}") as stream:
            return stream.read().decode()

    def fetch(self, rel: str) -> Path:
        """A local copy of `rel` (the file itself for a local output)."""
        local = self.local / rel
        if self.remote and not local.is_file():
            local.parent.mkdir(parents=True, exist_ok=True)
            fs, root = self._fs()
            with fs.open_input_stream(f"{root}/{rel}") as src, open(local, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return local

    def publish(self, rel: str) -> None:
        """Upload the staged file or folder `rel` (nothing to do for a local output)."""
        if not self.remote:
            return
        import pyarrow.fs as pafs

        fs, root = self._fs()
        source = self.local / rel
        if source.is_dir():
            fs.create_dir(f"{root}/{rel}", recursive=True)
            pafs.copy_files(str(source), f"{root}/{rel}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
        else:
            parent = rel.rpartition("/")[0]
            if parent:
                fs.create_dir(f"{root}/{parent}", recursive=True)
            with open(source, "rb") as src, fs.open_output_stream(f"{root}/{rel}") as dst:
                shutil.copyfileobj(src, dst)

    def is_empty(self) -> bool:
        if not self.remote:
            return not self.local.exists() or not any(p.name != LOGS for p in self.local.iterdir())
        import pyarrow.fs as pafs

        fs, root = self._fs()
        if fs.get_file_info(root).type == pafs.FileType.NotFound:
            return True
        return not fs.get_file_info(pafs.FileSelector(root, recursive=False))

    def clear(self) -> None:
        if self.local.exists():
            for child in self.local.iterdir():
                if child.name != LOGS:  # the running command's own log may be there
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        if self.remote:
            fs, root = self._fs()
            if not self.is_empty():
                fs.delete_dir_contents(root)
        self.local.mkdir(parents=True, exist_ok=True)
