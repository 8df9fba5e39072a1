import pytest

from tests.launch import run


@pytest.fixture(scope="session")
def smollm2_checkpoint(tmp_path_factory):
    """SmolLM2-135M-Instruct (real weights) converted once per session with the CLI: (HF dir, checkpoint dir)."""
    from megatron_ipt import assets

    hf_dir = assets.smollm2_hf_dir()
    save = tmp_path_factory.mktemp("smollm2") / "megatron"
    out = run("tools/convert_checkpoint.py", "hf-to-megatron", "--hf-dir", hf_dir, "--save", save)
    assert "wrote" in out and "134.5 M parameters" in out, out
    return hf_dir, save
