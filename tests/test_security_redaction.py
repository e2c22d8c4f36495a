"""Redaction of secrets in command lines: real-looking commands, argv and text forms."""

from __future__ import annotations

import ast
import pathlib

import pytest

from dgx_spark.security.redaction import (
    MASK,
    is_secret_name,
    redact_argv,
    redact_command,
    redact_text,
)

SECRET = "s3cr3t-Value_0123456789"

# (argv, expected display string). Every SECRET must be gone; everything else stays.
CASES: list[tuple[list[str], str]] = [
    (
        ["python", "-m", "vllm.entrypoints.openai.api_server", "--model", "meta-llama/Llama-3-8B",
         "--api-key", SECRET, "--max-model-len", "8192"],
        ("python -m vllm.entrypoints.openai.api_server --model meta-llama/Llama-3-8B --api-key *** "
        "--max-model-len 8192"),
    ),
    (
        ["vllm", "serve", "Qwen/Qwen2-7B", f"--api_key={SECRET}", "--max-tokens", "512"],
        "vllm serve Qwen/Qwen2-7B --api_key=*** --max-tokens 512",
    ),
    (
        ["huggingface-cli", "download", "meta-llama/Llama-3-8B", "--token", SECRET],
        "huggingface-cli download meta-llama/Llama-3-8B --token ***",
    ),
    (
        ["python", "train.py", "--hf-token", SECRET, "--epochs", "3", "--tokenizer", "gpt2"],
        "python train.py --hf-token *** --epochs 3 --tokenizer gpt2",
    ),
    (
        ["/usr/bin/python3", "/opt/jupyter/bin/jupyter-lab", f"--ServerApp.token={SECRET}",
         "--ServerApp.password=", "--port=8888", "--no-browser"],
        ("/usr/bin/python3 /opt/jupyter/bin/jupyter-lab --ServerApp.token=*** --ServerApp.password= "
        "--port=8888 --no-browser"),
    ),
    (
        ["env", f"HF_TOKEN={SECRET}", f"WANDB_API_KEY={SECRET}", f"AWS_SECRET_ACCESS_KEY={SECRET}",
         "PWD=/home/ai", "CUDA_VISIBLE_DEVICES=0,1", "torchrun", "--nproc_per_node=2", "sft.py"],
        ("env HF_TOKEN=*** WANDB_API_KEY=*** AWS_SECRET_ACCESS_KEY=*** PWD=/home/ai "
        "CUDA_VISIBLE_DEVICES=0,1 torchrun --nproc_per_node=2 sft.py"),
    ),
    (
        ["git", "clone", f"https://alice:{SECRET}@github.com/org/repo.git"],
        "git clone https://alice:***@github.com/org/repo.git",
    ),
    (
        ["python", "app.py", "--db", f"postgresql://admin:{SECRET}@db.internal:5432/app"],
        "python app.py --db postgresql://admin:***@db.internal:5432/app",
    ),
    (
        ["curl", "-sS", "-H", f"Authorization: Bearer {SECRET}", "http://127.0.0.1:8000/v1/models"],
        "curl -sS -H 'Authorization: Bearer ***' http://127.0.0.1:8000/v1/models",
    ),
    (
        ["open-webui", "serve", "--port", "8080", "--password", SECRET, "--no-auth"],
        "open-webui serve --port 8080 --password *** --no-auth",
    ),
    (
        ["python", "serve.py", f"--secret={SECRET}", f"--access-token={SECRET}", "--host", "0.0.0.0"],
        "python serve.py --secret=*** --access-token=*** --host 0.0.0.0",
    ),
    (
        ["wget", f"https://example.com/model.bin?token={SECRET}&rev=main"],
        "wget https://example.com/model.bin?token=***&rev=main",
    ),
    (
        ["python", "train.py", f"wandb.api_key={SECRET}", "model.max_tokens=512", f"PASSWORD={SECRET}"],
        "python train.py wandb.api_key=*** model.max_tokens=512 PASSWORD=***",
    ),
    (
        ["bash", "-c", f"OPENAI_API_KEY={SECRET} python serve.py --hf-token {SECRET} --port 7860"],
        "bash -c 'OPENAI_API_KEY=*** python serve.py --hf-token *** --port 7860'",
    ),
    (
        ["git", "push", "https://ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789@github.com/o/r.git"],
        "git push https://***@github.com/o/r.git",
    ),
    (
        ["python", "agent.py", "--model", "gpt-4o", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123"],
        "python agent.py --model gpt-4o ***",
    ),
    (
        ["runner", "--env", f'{{"HF_TOKEN": "{SECRET}", "PATH": "/usr/bin", "WORKERS": 4}}'],
        """runner --env '{"HF_TOKEN": "***", "PATH": "/usr/bin", "WORKERS": 4}'""",
    ),
]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[c[0][0] + "-" + str(i) for i, c in enumerate(CASES)])
def test_redact_command(argv: list[str], expected: str) -> None:
    shown = redact_command(argv)
    assert shown == expected
    assert SECRET not in shown
    # The single-string form (as ps shows it) hides the same secrets.
    assert SECRET not in redact_text(" ".join(argv))


def test_at_least_ten_real_command_lines() -> None:
    assert len(CASES) >= 10


@pytest.mark.parametrize(
    "text",
    [
        f"ollama serve --api-key {SECRET}",
        f"--password='{SECRET}'",
        f'TOKEN="{SECRET}" ./run.sh',
        f"Authorization: Basic {SECRET}",
        f"curl -H 'authorization: token {SECRET}' https://x",
        f"https://user:{SECRET}@host/",
        f"redis-cli -u redis://default:{SECRET}@localhost:6379",
        f"x --client-secret {SECRET} --auth-token={SECRET}",
        f"{{'loss': 0.3, 'api_key': '{SECRET}'}}",
        f'password: "{SECRET}"',
    ],
)
def test_redact_text_hides_secret(text: str) -> None:
    out = redact_text(text)
    assert SECRET not in out
    assert MASK in out


@pytest.mark.parametrize(
    "argv",
    [
        ["python", "-m", "http.server", "8000"],
        ["ollama", "serve"],
        ["python", "generate.py", "--max-tokens", "100", "--max-new-tokens=20", "--tokenizer", "gpt2"],
        ["ssh", "git@github.com"],
        ["bash", "-c", "cd /tmp && PWD=/tmp MONKEY=1 ./loop.sh"],
        ["llama-server", "-m", "model.gguf", "--port", "8080", "--ctx-size", "4096"],
        ["nginx", "-g", "daemon off;"],
    ],
)
def test_harmless_commands_unchanged(argv: list[str]) -> None:
    assert MASK not in redact_command(argv)
    assert redact_argv(argv) == argv


def test_flag_without_value_and_empty() -> None:
    assert redact_command(["x", "--token"]) == "x --token"
    assert redact_command(["x", "--token", "--port", "80"]) == "x --token --port 80"
    assert redact_command([]) == ""
    assert redact_command(None) == ""
    assert redact_text("") == ""


def test_secret_names() -> None:
    for name in ("--token", "--api-key", "--api_key", "--password", "--hf-token", "--secret", "--access-token",
                 "HF_TOKEN", "OPENAI_API_KEY", "DB_SECRET", "PASSWORD", "wandb.api_key"):
        assert is_secret_name(name), name
    for name in ("--max-tokens", "--tokenizer", "--port", "PWD", "MONKEY", "--no-auth", "--bypass", "PATH"):
        assert not is_secret_name(name), name


def test_redaction_module_imports_no_web_framework() -> None:
    """The collector imports it, so it must stay plain Python."""
    source = pathlib.Path(__file__).resolve().parents[1] / "dgx_spark" / "security" / "redaction.py"
    tree = ast.parse(source.read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {m for m in imported if m.split(".")[0] in {"reflex", "fastapi", "starlette"}}
