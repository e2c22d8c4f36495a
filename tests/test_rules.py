"""The classification table against recorded process descriptions of real workloads.

Each case is what /proc showed for a real workload (command line, comm, working
directory, terminal), recorded as plain ``ProcessFacts``: no live process needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dgx_spark.collector.rules import (
    BUILTIN_RULES,
    ProcessFacts,
    build_table,
    load_table,
    load_user_rules,
    shape_of,
)

TABLE = build_table()
VENV = "/home/ai/venv/bin"


def facts(argv: str | list[str], *, comm: str | None = None, cwd: str = "/home/ai", tty: bool = False,
          listening: bool = False) -> ProcessFacts:
    """A recorded process: argv as /proc/<pid>/cmdline splits it."""
    parts = argv.split() if isinstance(argv, str) else argv
    return ProcessFacts(pid=4242, argv=tuple(parts), comm=comm or Path(parts[0]).name[:15], cwd=cwd,
                        user="ai", tty=tty, listening=listening)


# (case id, facts, expected type, expected name)
OPERATIONS = [
    ("comfyui-relative", facts(f"{VENV}/python main.py --listen 0.0.0.0 --port 8188", cwd="/home/ai/ComfyUI"),
     "server", "ComfyUI"),
    ("comfyui-absolute", facts(f"{VENV}/python3 /opt/comfyui/main.py --highvram"), "server", "ComfyUI"),
    ("ollama-serve", facts("/usr/local/bin/ollama serve"), "server", "Ollama"),
    ("ollama-runner-child", facts(
        "/usr/local/bin/ollama runner --model /usr/share/ollama/.ollama/models/blobs/sha256-6a0746a1ec1a "
        "--ctx-size 8192 --batch-size 512 --n-gpu-layers 29 --threads 20 --parallel 4 --port 37187"),
     "server", "Ollama runner · sha256-6a0746a1ec1a"),
    ("vllm-serve", facts(f"{VENV}/python3 {VENV}/vllm serve meta-llama/Llama-3.1-8B-Instruct --port 8000",
                         comm="vllm"), "server", "vLLM · meta-llama/Llama-3.1-8B-Instruct"),
    ("vllm-entrypoint", facts(f"{VENV}/python -m vllm.entrypoints.openai.api_server --model "
                              "/models/Qwen2.5-7B-Instruct --gpu-memory-utilization 0.8"),
     "server", "vLLM · Qwen2.5-7B-Instruct"),
    ("jupyter-lab", facts(f"{VENV}/python3 {VENV}/jupyter-lab --no-browser --ip=0.0.0.0", comm="jupyter-lab"),
     "server", "Jupyter Lab"),
    ("jupyter-notebook", facts(f"{VENV}/python {VENV}/jupyter-notebook", comm="jupyter-notebo"),
     "server", "Jupyter Notebook"),
    ("llama-server", facts("/opt/llama.cpp/build/bin/llama-server -m /models/llama-3-8b.Q4_K_M.gguf "
                           "--host 0.0.0.0 --port 8080 -ngl 99"),
     "server", "llama.cpp · llama-3-8b.Q4_K_M.gguf"),
    ("sglang", facts(f"{VENV}/python -m sglang.launch_server --model-path Qwen/Qwen2.5-7B --port 30000"),
     "server", "SGLang · Qwen/Qwen2.5-7B"),
    ("tgi", facts("text-generation-launcher --model-id mistralai/Mistral-7B-v0.1 --port 3000",
                  comm="text-generation"), "server", "TGI · mistralai/Mistral-7B-v0.1"),
    ("triton", facts("/opt/tritonserver/bin/tritonserver --model-repository=/models"),
     "server", "Triton Inference Server"),
    ("open-webui", facts(f"{VENV}/python3 {VENV}/open-webui serve", comm="open-webui"), "server", "Open WebUI"),
    ("open-webui-uvicorn", facts(f"{VENV}/python3 -m uvicorn open_webui.main:app --host 0.0.0.0 --port 8080"),
     "server", "Open WebUI"),
    ("uvicorn", facts(f"{VENV}/python3 {VENV}/uvicorn app.main:app --port 9000", comm="uvicorn"),
     "server", "Uvicorn · app.main:app"),
    ("gunicorn", facts(f"{VENV}/python {VENV}/gunicorn -w 4 wsgi:app", comm="gunicorn"),
     "server", "Gunicorn · wsgi:app"),
    ("streamlit", facts(f"{VENV}/python {VENV}/streamlit run dashboard.py", comm="streamlit"),
     "server", "Streamlit · dashboard.py"),
    ("http-server", facts("/usr/bin/python3 -m http.server 8000"), "server", "HTTP server"),
    ("node-server", facts("node /srv/app/server.js", cwd="/srv/app"), "server", "server.js"),
    ("nginx-master", facts(["nginx: master process /usr/sbin/nginx -g daemon on; master_process on;"],
                           comm="nginx"), "server", "nginx"),
    ("caddy", facts("/usr/bin/caddy run --config /etc/caddy/Caddyfile"), "server", "Caddy"),
    ("any-listener", facts(f"{VENV}/python my_api.py", listening=True), "server", "my_api.py"),
    ("torchrun", facts(f"{VENV}/python3 {VENV}/torchrun --nproc_per_node 4 train_gpt.py --batch 8",
                       comm="torchrun"), "job", "train_gpt.py"),
    ("torchrun-worker", facts(f"{VENV}/python3 -u train_gpt.py --batch 8"), "job", "train_gpt.py"),
    ("torch-distributed-run", facts(f"{VENV}/python -m torch.distributed.run --nproc-per-node=2 "
                                    "finetune_llama.py"), "job", "finetune_llama.py"),
    ("accelerate", facts(f"{VENV}/python {VENV}/accelerate launch --num_processes 2 run_sft.py "
                         "--config sft.yaml", comm="accelerate"), "job", "run_sft.py"),
    ("deepspeed", facts(f"{VENV}/python {VENV}/deepspeed --num_gpus 8 pretrain.py", comm="deepspeed"),
     "job", "pretrain.py"),
    ("hf-trainer", facts(f"{VENV}/python run_clm.py --model_name_or_path gpt2 --do_train "
                         "--num_train_epochs 3 --output_dir out"), "job", "run_clm.py"),
    ("epochs-arg", facts(f"{VENV}/python experiment.py --epochs 20 --lr 3e-4"), "job", "experiment.py"),
    ("axolotl", facts(f"{VENV}/python {VENV}/axolotl train examples/llama-3/lora.yml", comm="axolotl"),
     "job", "Axolotl · lora.yml"),
    ("llamafactory", facts(f"{VENV}/python {VENV}/llamafactory-cli train examples/train_lora/llama3.yaml",
                           comm="llamafactory-cl"), "job", "LLaMA-Factory · llama3.yaml"),
    ("lightning", facts(f"{VENV}/python {VENV}/lightning run model --devices 2 model.py", comm="lightning"),
     "job", "model.py"),
    ("bash-script", facts("/bin/bash ./nightly_backup.sh", cwd="/home/ai/scripts"), "program",
     "nightly_backup.sh"),
    ("python-script", facts(f"{VENV}/python tools/convert.py data.csv"), "program", "convert.py"),
    ("node-script", facts("/usr/bin/node build.js"), "program", "build.js"),
    ("perl-script", facts("/usr/bin/perl -w rename.pl"), "program", "rename.pl"),
    ("anything-in-terminal", facts("htop", tty=True), "program", "htop"),
]

NOT_OPERATIONS = [
    ("systemd", facts("/lib/systemd/systemd --user")),
    ("systemd-journald", facts("/lib/systemd/systemd-journald", comm="systemd-journal")),
    ("sshd", facts(["sshd: ai [priv]"], comm="sshd")),
    ("sshd-listening", facts("/usr/sbin/sshd -D", listening=True)),
    ("dbus", facts("/usr/bin/dbus-daemon --system --address=systemd: --nofork --nopidfile --systemd-activation")),
    ("containerd", facts("/usr/bin/containerd")),
    ("containerd-shim", facts("/usr/bin/containerd-shim-runc-v2 -namespace moby -id 3f2a -address "
                              "/run/containerd/containerd.sock", comm="containerd-shim")),
    ("dockerd", facts("/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock")),
    ("cron", facts("/usr/sbin/cron -f -P")),
    ("nvidia-persistenced", facts("/usr/bin/nvidia-persistenced --user nvidia-persistenced", comm="nvidia-persiste")),
    ("gnome-shell", facts("/usr/bin/gnome-shell", tty=True)),
    ("xorg", facts("/usr/lib/xorg/Xorg vt2 -displayfd 3", comm="Xorg", tty=True)),
    ("login-shell", facts(["-bash"], comm="bash", tty=True)),
    ("interactive-bash", facts("bash", tty=True)),
    ("zsh", facts("/usr/bin/zsh -l", tty=True)),
    ("tmux-server", facts("tmux new -s work")),
    ("tmux-client", facts("tmux attach", tty=True)),
    ("screen", facts("SCREEN -S train", comm="screen")),
    ("vscode-server", facts("/home/ai/.vscode-server/cli/servers/Stable-1/server/node "
                            "/home/ai/.vscode-server/cli/servers/Stable-1/server/out/server-main.js --port 0",
                            comm="node", listening=True)),
]


@pytest.mark.parametrize(("case", "process", "kind", "name"), OPERATIONS, ids=[case[0] for case in OPERATIONS])
def test_known_workloads_are_classified(case: str, process: ProcessFacts, kind: str, name: str) -> None:
    verdict = TABLE.classify(process)
    assert verdict is not None, f"{case}: no rule matched"
    assert (verdict.type, verdict.name) == (kind, name), f"{case}: rule {verdict.rule.id}"


@pytest.mark.parametrize(("case", "process"), NOT_OPERATIONS, ids=[case[0] for case in NOT_OPERATIONS])
def test_system_processes_are_not_operations(case: str, process: ProcessFacts) -> None:
    verdict = TABLE.classify(process)
    assert verdict is not None and verdict.type == "ignore", f"{case}: {verdict}"


def test_plain_sleep_without_terminal_matches_no_rule() -> None:
    assert TABLE.classify(facts("sleep 300")) is None
    assert TABLE.classify(facts("/usr/bin/sleep 300", tty=True)).type == "program"


def test_known_servers_carry_their_default_port() -> None:
    assert TABLE.classify(facts("/usr/local/bin/ollama serve")).rule.port == 11434
    assert TABLE.classify(facts("python main.py", cwd="/x/ComfyUI")).rule.port == 8188
    assert TABLE.classify(facts("/usr/bin/python3 -m http.server")).rule.port == 8000


def test_job_rules_win_over_listening() -> None:
    """A training launcher listens (the rendezvous store) but stays a job."""
    verdict = TABLE.classify(facts(f"{VENV}/python3 {VENV}/torchrun --nproc_per_node 4 train.py",
                                   comm="torchrun", listening=True))
    assert verdict.type == "job"


def test_shape_of_interpreter_command_lines() -> None:
    shape = shape_of(facts("/usr/bin/python3 -u -W ignore -X dev train.py --lr 1", cwd="/w"))
    assert (shape.runs, shape.script, shape.script_path, shape.args) == ("script", "train.py", "/w/train.py",
                                                                          ("--lr", "1"))
    shape = shape_of(facts("python3 -m torch.distributed.run --nproc-per-node=2 x.py"))
    assert (shape.runs, shape.module) == ("module", "torch.distributed.run")
    assert shape_of(facts(["bash", "-c", "sleep 1; echo hi"])).runs == "code"
    assert shape_of(facts(["bash", "-lc", "make"])).runs == "code"
    assert shape_of(facts("bash --login")).runs == "nothing"
    assert shape_of(facts(["-zsh"], comm="zsh")).program == "zsh"


def test_user_rule_file_adds_and_overrides(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        """
# A house server that would otherwise be a plain program.
[[rule]]
id = "lab-api"
type = "server"
name = "Lab API · {arg1}"
program = ["labd"]
port = 7000

# Show tmux sessions after all (replaces the built-in "multiplexer" rule).
[[rule]]
id = "multiplexer"
type = "program"
name = "tmux session"
program = ["tmux"]

# Our nightly evaluation is a job, not a program.
[[rule]]
id = "evals"
type = "job"
name = "Evaluation · {script}"
script = ["eval_*.py"]
args = ['--suite\\b']
"""
    )
    table = load_table(rules_file)
    assert table.problems == ()
    lab = table.classify(facts("/opt/lab/bin/labd staging --verbose"))
    assert (lab.type, lab.name, lab.rule.port) == ("server", "Lab API · staging", 7000)
    assert TABLE.classify(facts("/opt/lab/bin/labd staging")) is None
    tmux = table.classify(facts("tmux new -s work"))
    assert (tmux.type, tmux.name) == ("program", "tmux session")
    assert sum(rule.id == "multiplexer" for rule in table.rules) == 1
    evals = table.classify(facts(f"{VENV}/python eval_mmlu.py --suite full"))
    assert (evals.type, evals.name) == ("job", "Evaluation · eval_mmlu.py")
    # Without the args criterion matching, the built-in rules apply again.
    assert table.classify(facts(f"{VENV}/python eval_mmlu.py")).type == "program"


def test_bad_user_rules_are_skipped_with_a_message(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        """
[[rule]]
id = "no-type"
program = ["x"]

[[rule]]
id = "bad-regex"
type = "job"
args = ["(unclosed"]

[[rule]]
id = "typo"
type = "server"
programme = ["x"]

[[rule]]
id = "no-criteria"
type = "server"

[[rule]]
id = "fine"
type = "server"
program = ["fine-server"]
"""
    )
    rules, problems = load_user_rules(rules_file)
    assert [rule.id for rule in rules] == ["fine"]
    joined = "\n".join(problems)
    for fragment in ("'type'", "invalid regular expression", "programme", "at least one criterion"):
        assert fragment in joined


def test_unreadable_rule_file_keeps_the_builtin_table(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text("[[rule]\nthis is not toml")
    table = load_table(rules_file)
    assert len(table.rules) == len(BUILTIN_RULES)
    assert table.problems and "cannot read rules" in table.problems[0]
    assert load_table(tmp_path / "missing.toml").problems == ()


def test_rule_ids_are_unique() -> None:
    ids = [rule.id for rule in BUILTIN_RULES]
    assert len(ids) == len(set(ids))
