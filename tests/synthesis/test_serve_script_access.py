"""examples/synthesize_vllm_serve.sh (issue 13): the servers listen on this node only unless HOST says otherwise,
and then only with an API key that the client sends; the key never appears on a command line (DRY_RUN=1 prints
the environment each command gets, then the command)."""

import os
import shlex
import subprocess

from tests.synthesis.test_scripts import REPO, synthesize_args

KEY_VARS = ("VLLM_API_KEY", "API_KEY", "OPENAI_API_KEY", "API_KEY_FILE", "HOST", "SERVER_URLS")


def dry_run(out_dir, **env):
    base = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    proc = subprocess.run(
        ["bash", os.path.join(REPO, "examples", "synthesize_vllm_serve.sh"), "/in", str(out_dir)],
        env={**base, "DRY_RUN": "1", "GPUS": "2", "TP": "1", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    commands = []
    for line in proc.stdout.splitlines():
        words = shlex.split(line)
        split = next(i for i, w in enumerate(words) if "=" not in w)
        commands.append((dict(w.split("=", 1) for w in words[:split]), words[split:]))
    return commands[:-1], commands[-1], proc.stderr


def test_servers_listen_on_the_loopback_by_default(tmp_path):
    serves, (client_env, client), _ = dry_run(tmp_path)
    assert [argv[argv.index("--host") + 1] for _, argv in serves] == ["127.0.0.1", "127.0.0.1"]
    assert all("VLLM_API_KEY" not in env for env, _ in serves) and client_env == {}
    assert synthesize_args(client).base_url == ["http://127.0.0.1:8000/v1,http://127.0.0.1:8001/v1"]


def test_serving_other_nodes_requires_a_key_the_client_sends(tmp_path):
    serves, (client_env, client), err = dry_run(tmp_path, HOST="0.0.0.0")
    keys = {env["VLLM_API_KEY"] for env, _ in serves}
    assert len(keys) == 1 and len(keys.pop()) >= 32  # generated: one key for every replica...
    assert client_env["OPENAI_API_KEY"] == serves[0][0]["VLLM_API_KEY"]  # ...that the client sends
    assert all(argv[argv.index("--host") + 1] == "0.0.0.0" for _, argv in serves)
    assert all(client_env["OPENAI_API_KEY"] not in " ".join(argv) for _, argv in serves + [(None, client)])
    assert f"a new API key would be written to {tmp_path}/vllm-api-key" in err
    assert synthesize_args(client).base_url == ["http://127.0.0.1:8000/v1,http://127.0.0.1:8001/v1"]
    again = dry_run(tmp_path, HOST="0.0.0.0")[0][0][0]["VLLM_API_KEY"]
    assert again != client_env["OPENAI_API_KEY"]  # a fresh key per run when none was kept


def test_a_given_or_kept_key_is_used_and_one_address_is_reached_directly(tmp_path):
    serves, (client_env, client), _ = dry_run(tmp_path, HOST="10.1.2.3", VLLM_API_KEY="given")
    assert {env["VLLM_API_KEY"] for env, _ in serves} == {"given"} and client_env == {"OPENAI_API_KEY": "given"}
    assert synthesize_args(client).base_url == ["http://10.1.2.3:8000/v1,http://10.1.2.3:8001/v1"]
    (tmp_path / "vllm-api-key").write_text("kept\n")  # written by an earlier run: a requeued job keeps its key
    serves, (client_env, _), _ = dry_run(tmp_path, HOST="0.0.0.0")
    assert {env["VLLM_API_KEY"] for env, _ in serves} == {"kept"} and client_env == {"OPENAI_API_KEY": "kept"}
    # a client on another node reads the key the servers' job wrote (a shared file system)
    serves, (client_env, _), _ = dry_run(tmp_path, SERVER_URLS="http://n1:8000/v1")
    assert serves == [] and client_env == {"OPENAI_API_KEY": "kept"}
