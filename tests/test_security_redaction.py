"""Redaction of secrets in command lines: real-looking commands, argv and text forms."""

from __future__ import annotations

import ast
import pathlib

import pytest

from dgx_spark.redaction import (
    MASK,
    is_secret_name,
    redact_argv,
    redact_command,
    redact_lines,
    redact_text,
)
from dgx_spark.security.token import operation_token

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
    source = pathlib.Path(__file__).resolve().parents[1] / "dgx_spark" / "redaction.py"
    tree = ast.parse(source.read_text())
    imported = {
        (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not {m for m in imported if m.split(".")[0] in {"reflex", "fastapi", "starlette"}}


JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"

# (text, what must be gone, expected output): each form once.
HIDDEN_FORMS: list[tuple[str, str, str]] = [
    (f"curl -H 'x-api-key: {SECRET}' https://api", SECRET, "curl -H 'x-api-key: ***' https://api"),
    (f"api-key: {SECRET}", SECRET, "api-key: ***"),
    (f"curl --header 'X-Api-Key: {SECRET}' https://api", SECRET, "curl --header 'X-Api-Key: ***' https://api"),
    ("password: x", ": x", "password: ***"),
    ("WANDB_API_KEY: v", ": v", "WANDB_API_KEY: ***"),
    (f"PGPASSWORD={SECRET} psql -h db", SECRET, "PGPASSWORD=*** psql -h db"),
    (f"MYSQL_PWD={SECRET} mysql -u root", SECRET, "MYSQL_PWD=*** mysql -u root"),
    (f"token is {JWT} ok", JWT, "token is *** ok"),
    (
        f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----\ndone",
        PEM_BODY,
        "-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY-----\ndone",
    ),
    (f"cat: -----BEGIN PRIVATE KEY-----{PEM_BODY}", PEM_BODY, "cat: -----BEGIN PRIVATE KEY-----***"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "4eC39HqLyjWDarjtT1zdp7dc", "stripe ***"),
    ("maps AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "SyD-9tSrke72", "maps ***"),
    ("npm_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 login", "AbCdEfGh", "*** login"),
    (f"DGX_SPARK_TOKEN={operation_token('launch-1', 'x' * 32)}", "op1.", "DGX_SPARK_TOKEN=***"),
    (f"report with {operation_token('launch-2', 'y' * 32)}", "op1.", "report with ***"),
    (f"requests.get(url, headers=hdr(Bearer {SECRET}))", SECRET, "requests.get(url, headers=hdr(Bearer ***))"),
    (f"(Authorization: Bearer {SECRET})", SECRET, "(Authorization: Bearer ***)"),
    ("(Authorization: Bearer ***)", "Bearer ***)x", "(Authorization: Bearer ***)"),
    (f"[password: {SECRET}]", SECRET, "[password: ***]"),
]


@pytest.mark.parametrize(("text", "gone", "expected"), HIDDEN_FORMS, ids=[str(i) for i in range(len(HIDDEN_FORMS))])
def test_secret_forms_hidden(text: str, gone: str, expected: str) -> None:
    out = redact_text(text)
    assert out == expected
    assert gone not in out
    # Idempotent: redacting again changes nothing (text shown twice, e.g. logs then events).
    assert redact_text(out) == out


# Near misses: text that looks a little like a secret and must stay exactly as it is.
NEAR_MISSES = [
    "PWD=/home/ai OLDPWD=/tmp",
    "max_tokens: 512",
    "tokenizer: gpt2",
    "keyboard: us",
    "monkey: 1",
    "api-key-id: 17",
    "time: 12:00:01",
    "http://127.0.0.1:8000/v1",
    "npm_config_cache=/root/.npm",
    "npm_package_name: demo",
    "eyJhbGciOiJIUzI1NiJ9 alone is not a JWT",
    "-----BEGIN PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----",
    "sk_live_ short",
    "AIza short",
    "op1.example.com",
    "Bearer ***)",
    "(see Authorization header)",
    "password:",
    "ssh git@github.com",
    "cd /srv && ls --password-file",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_stay(text: str) -> None:
    assert redact_text(text) == text


def test_argv_header_argument() -> None:
    argv = ["curl", "--header", f"X-Api-Key: {SECRET}", "-H", f"api-key: {SECRET}", "https://api"]
    assert redact_command(argv) == "curl --header 'X-Api-Key: ***' -H 'api-key: ***' https://api"


def test_redact_lines_hides_pem_across_lines() -> None:
    lines = [
        "loading key",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        PEM_BODY,
        PEM_BODY[:20],
        "-----END OPENSSH PRIVATE KEY-----",
        f"HF_TOKEN={SECRET}",
        "done",
    ]
    out = redact_lines(lines)
    assert out == [
        "loading key",
        "-----BEGIN OPENSSH PRIVATE KEY-----***",
        MASK,
        MASK,
        "-----END OPENSSH PRIVATE KEY-----",
        "HF_TOKEN=***",
        "done",
    ]


def test_redact_lines_tail_that_starts_inside_a_key() -> None:
    """A log tail cut inside the block: the key lines above END are hidden."""
    out = redact_lines([PEM_BODY, PEM_BODY, "-----END PRIVATE KEY-----", "next line"])
    assert out == [MASK, MASK, "-----END PRIVATE KEY-----", "next line"]


def test_redact_lines_unterminated_key_hides_the_rest() -> None:
    out = redact_lines(["-----BEGIN EC PRIVATE KEY-----", PEM_BODY, PEM_BODY])
    assert PEM_BODY not in "".join(out)
    assert len(out) == 3


def test_secret_names_without_separator() -> None:
    for name in ("PGPASSWORD", "MYSQL_PWD", "DB_PWD", "X-Api-Key", "api-key", "DBPASSWORD"):
        assert is_secret_name(name), name
    for name in ("PWD", "OLDPWD", "--pwd", "api-key-id"):
        assert not is_secret_name(name), name
