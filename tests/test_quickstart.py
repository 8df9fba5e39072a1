"""`make quickstart` runs examples/quickstart.sh: it must work end to end on this machine."""
import json
import os
import subprocess
import sys

from megatron.core.datasets.indexed_dataset import IndexedDataset

from tests.conftest import REPO


def test_quickstart_script_runs_end_to_end(tmp_path):
    env = dict(os.environ, QUICKSTART_DIR=str(tmp_path),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    result = subprocess.run(["bash", os.path.join(REPO, "examples", "quickstart.sh")], capture_output=True, text=True,
                            env=env, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = str(tmp_path / "quickstart_text_document")
    assert f"--data-path {prefix}" in result.stdout
    with open(tmp_path / "corpus" / "summary.json") as f:
        corpus = json.load(f)
    ds = IndexedDataset(prefix)
    assert len(ds.document_indices) - 1 == corpus["documents"]  # every document of the mixed corpus
    assert ds.sequence_lengths.sum() > 250_000
    del ds
