"""`vit-finetune push` / `push-space` against a local Hub stand-in (tests/hub_server.py): no network needed.

The end-to-end test pushes a tiny model, reads back what the server stored, and loads it from the server with
`trust_remote_code=True` in a Python process where `vit_finetune` cannot be imported. The others cover each
user error (no token, no network, bad token, forbidden namespace, name conflict, not a model folder).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hub_server import LocalHub, hub_client_env, hub_env, local_hub  # noqa: F401  (fixtures)
from tiny_model import METRICS, trained_folder, trained_folder_template  # noqa: F401  (fixtures)

from vit_finetune import hub
from vit_finetune.hub.model_card import GENERATED_MARKER, write_model_card

REPO = "alice/tiny-vit"


def run_push(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = hub.push_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{err}"
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


# ----------------------------------------------------------------------------- the happy path
LOAD_SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["vit_finetune"] = None  # whatever is installed, this process cannot import our package
    import json, torch
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline
    try:
        import vit_finetune
        raise SystemExit("vit_finetune is importable")
    except ImportError:
        pass
    repo = sys.argv[1]
    model = AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True).eval()
    pixels = torch.linspace(-1, 1, 3 * 32 * 32).reshape(1, 3, 32, 32)
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits[0].tolist()
    classifier = pipeline("image-classification", model=repo, trust_remote_code=True)
    top = classifier(Image.new("RGB", (50, 40), (200, 30, 30)), top_k=3)
    print(json.dumps({"module": type(model).__module__, "labels": model.config.id2label, "logits": logits,
                      "pipeline_labels": sorted(p["label"] for p in top)}))
""")


def test_push_then_load_from_the_hub_without_vit_finetune(hub_env: LocalHub, trained_folder: Path,
                                                          capsys, tmp_path: Path) -> None:
    code, out, err = run_push(capsys, str(trained_folder), "--repo_id", REPO, "--commit_message", "first model")
    assert code == 0, err
    assert f"{REPO}/commit/" in out

    # What the server stored is exactly the folder (the card regenerated for the repo, also written locally).
    stored = hub_env.files(REPO)
    local = {p.name: p.read_bytes() for p in trained_folder.iterdir() if p.is_file()}
    assert set(stored) == set(local) | {".gitattributes"}
    for name, content in local.items():
        assert stored[name] == content, name
    card = stored["README.md"].decode()
    assert f'from_pretrained("{REPO}", trust_remote_code=True)' in card
    assert json.loads(stored["config.json"])["auto_map"]["AutoModelForImageClassification"] == \
        "modeling_vit.ViTForImageClassification"

    # One commit on top of the repo's initial one, the weights through git-LFS, our message.
    repo = hub_env.repo(REPO)
    head = repo.commits[repo.branches["main"]]
    assert head.summary == "first model" and repo.commits[head.parent].parent is None
    assert head.files["model.safetensors"].lfs and not head.files["config.json"].lfs
    assert any(p.endswith("/info/lfs/objects/batch") for p in hub_env.paths_requested("POST"))

    # Anyone (here: a process that cannot import vit_finetune) loads it from the Hub with remote code.
    env = hub_client_env(hub_env.endpoint, str(tmp_path / "other_user_home"), token=None)
    result = subprocess.run([sys.executable, "-I", "-c", LOAD_SCRIPT, REPO], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["module"].startswith("transformers_modules.")  # the uploaded code, not our package
    assert loaded["labels"] == {"0": "cat", "1": "dog", "2": "bird"}
    assert loaded["pipeline_labels"] == ["bird", "cat", "dog"]

    # ... and gets the very weights that were pushed; with vit-finetune installed, no remote code is needed.
    import torch
    from transformers import AutoModelForImageClassification

    import vit_finetune

    pixels = torch.linspace(-1, 1, 3 * 32 * 32).reshape(1, 3, 32, 32)
    local = AutoModelForImageClassification.from_pretrained(trained_folder).eval()
    from_hub = AutoModelForImageClassification.from_pretrained(REPO, cache_dir=tmp_path / "cache").eval()
    assert isinstance(from_hub, vit_finetune.ViTForImageClassification)
    with torch.no_grad():
        expected = local(pixel_values=pixels).logits[0]
        assert torch.allclose(from_hub(pixel_values=pixels).logits[0], expected)
    assert torch.allclose(torch.tensor(loaded["logits"]), expected, atol=1e-5)


def test_push_to_a_branch_leaves_main_alone(hub_env: LocalHub, trained_folder: Path, capsys) -> None:
    code, _, err = run_push(capsys, str(trained_folder), "--repo_id", REPO, "--revision", "experiment")
    assert code == 0, err
    assert set(hub_env.files(REPO)) == {".gitattributes"}  # main keeps only the initial commit
    assert "model.safetensors" in hub_env.files(REPO, revision="experiment")


def test_private_flag_creates_a_private_repo(hub_env: LocalHub, trained_folder: Path, capsys) -> None:
    code, _, err = run_push(capsys, str(trained_folder), "--repo_id", REPO, "--private")
    assert code == 0, err
    assert hub_env.repo(REPO).private


def test_private_flag_on_an_existing_public_repo_says_it_stays_public(hub_env: LocalHub, trained_folder: Path,
                                                                       capsys) -> None:
    assert run_push(capsys, str(trained_folder), "--repo_id", REPO)[0] == 0
    code, _, err = run_push(capsys, str(trained_folder), "--repo_id", REPO, "--private")
    assert code == 0, err
    assert "already exists and is public" in err and not hub_env.repo(REPO).private


def test_second_push_updates_the_same_repo(hub_env: LocalHub, trained_folder: Path, capsys) -> None:
    assert run_push(capsys, str(trained_folder), "--repo_id", REPO)[0] == 0
    metrics = dict(METRICS, eval=dict(METRICS["eval"], accuracy=0.9375))
    (trained_folder / "metrics.json").write_text(json.dumps(metrics))
    code, _, err = run_push(capsys, str(trained_folder), "--repo_id", REPO)
    assert code == 0, err  # the 409 of "repo exists" is ours: an update, not an error
    stored = hub_env.files(REPO)
    assert json.loads(stored["metrics.json"])["eval"]["accuracy"] == 0.9375
    assert "value: 0.9375" in stored["README.md"].decode()  # the card followed the new metrics


def test_stored_login_is_used_when_hf_token_is_unset(hub_env: LocalHub, trained_folder: Path, capsys,
                                                     monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN")
    hub_env.token_path.write_text("alice-token")
    assert run_push(capsys, str(trained_folder), "--repo_id", REPO)[0] == 0
    assert "model.safetensors" in hub_env.files(REPO)


def test_dry_run_lists_files_and_touches_nothing(hub_env: LocalHub, trained_folder: Path, capsys) -> None:
    (trained_folder / "checkpoint-10").mkdir()
    (trained_folder / "checkpoint-10" / "optimizer.pt").write_bytes(b"x" * 10)
    (trained_folder / "runs").mkdir()
    (trained_folder / "runs" / "events.out").write_bytes(b"x")
    card_before = (trained_folder / "README.md").exists()
    code, out, err = run_push(capsys, str(trained_folder), "--repo_id", REPO, "--dry_run")
    assert code == 0, err
    for name in ("config.json", "model.safetensors", "modeling_vit.py", "configuration_vit.py",
                 "training_curves.png", "README.md"):
        assert f"  {name} " in out
    assert "generated for alice/tiny-vit" in out
    assert "Left out: checkpoint-10/, runs/" in out
    assert "optimizer.pt" not in out.split("Left out")[0]
    assert hub_env.requests == []  # no request at all, not even to create the repo
    assert (trained_folder / "README.md").exists() == card_before


def test_card_kept_if_edited_else_regenerated_with_its_metadata(hub_env: LocalHub, trained_folder: Path,
                                                                capsys) -> None:
    write_model_card(trained_folder, license="mit", tags=["flowers"])
    assert run_push(capsys, str(trained_folder), "--repo_id", REPO)[0] == 0
    card = hub_env.files(REPO)["README.md"].decode()
    assert "license: mit" in card and "- flowers" in card  # choices made at training time survive
    assert f'model="{REPO}"' in card

    edited = card.replace(GENERATED_MARKER, "").replace("# tiny-vit", "# My hand-written title")
    (trained_folder / "README.md").write_text(edited)
    assert run_push(capsys, str(trained_folder), "--repo_id", REPO)[0] == 0
    assert hub_env.files(REPO)["README.md"].decode() == edited


# ----------------------------------------------------------------------------- errors, one line each
def test_missing_token(hub_env: LocalHub, trained_folder: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("HF_TOKEN")
    code, _, err = run_push(capsys, str(trained_folder), "--repo_id", REPO)
    assert code == 1
    assert_one_line_error(err, "no Hugging Face token", "hf auth login", "HF_TOKEN")
    assert hub_env.requests == []


def test_invalid_token_gives_401_message(hub_env: LocalHub, trained_folder: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_expired")
    code, _, err = run_push(capsys, str(trained_folder), "--repo_id", REPO)
    assert code == 1
    assert_one_line_error(err, "401", "hf auth login")
    assert [r.status for r in hub_env.requests] == [401]


def test_namespace_of_someone_else_gives_403_message(hub_env: LocalHub, trained_folder: Path, capsys) -> None:
    code, _, err = run_push(capsys, str(trained_folder), "--repo_id", "bob/tiny-vit")
    assert code == 1
    assert_one_line_error(err, "403", "'bob'", "your own user name")
    assert ("model", "bob/tiny-vit") not in hub_env.repos


def test_name_taken_by_someone_else(hub_env: LocalHub, trained_folder: Path, capsys) -> None:
    hub_env.add_repo("bob/flowers", owner="bob", files={"README.md": b"bob's model"})
    code, _, err = run_push(capsys, str(trained_folder), "--repo_id", "bob/flowers")
    assert code == 1
    assert_one_line_error(err, "bob/flowers already exists", "pick another name")
    assert hub_env.files("bob/flowers")["README.md"] == b"bob's model"


def test_no_network_gives_one_line_in_the_real_cli(trained_folder: Path, tmp_path: Path) -> None:
    """The installed entry point, in a fresh process, reading HF_ENDPOINT from the environment."""
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    env = hub_client_env(closed, str(tmp_path / "home"))
    result = subprocess.run([sys.executable, "-m", "vit_finetune.cli", "push", str(trained_folder),
                             "--repo_id", REPO], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "cannot reach the Hugging Face Hub", closed, "HF_ENDPOINT")


@pytest.mark.parametrize("damage, needle", [
    (lambda f: (f / "modeling_vit.py").unlink(), "lacks modeling_vit.py"),
    (lambda f: (f / "config.json").write_text(json.dumps(
        {k: v for k, v in json.loads((f / "config.json").read_text()).items() if k != "auto_map"})),
     "no auto_map"),
    (lambda f: (f / "model.safetensors").unlink(), "holds no weights"),
    (lambda f: (f / "config.json").unlink(), "no readable config.json"),
])
def test_folder_that_others_could_not_load_is_refused(hub_env: LocalHub, trained_folder: Path, capsys,
                                                      damage, needle: str) -> None:
    damage(trained_folder)
    code, _, err = run_push(capsys, str(trained_folder), "--repo_id", REPO)
    assert code == 1
    assert_one_line_error(err, needle)
    assert hub_env.requests == []


def test_bad_repo_id(hub_env: LocalHub, trained_folder: Path, capsys) -> None:
    code, _, err = run_push(capsys, str(trained_folder), "--repo_id", "no-namespace")
    assert code == 1
    assert_one_line_error(err, "--repo_id must look like 'user-or-org/name'")


def test_push_to_hub_api_raises_push_error(hub_env: LocalHub, trained_folder: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_expired")
    with pytest.raises(hub.PushError, match="401"):
        hub.push_to_hub(trained_folder, REPO)
    url = hub.push_to_hub(trained_folder, REPO, token="alice-token")  # an explicit token wins
    assert url.startswith(f"{hub_env.endpoint}/{REPO}/commit/")


# ----------------------------------------------------------------------------- push-space
def test_push_space_uploads_the_demo_pointing_at_the_model(hub_env: LocalHub, trained_folder: Path,
                                                           capsys) -> None:
    from huggingface_hub import SpaceCard

    assert run_push(capsys, str(trained_folder), "--repo_id", REPO)[0] == 0
    code = hub.push_space_main(["--model_id", REPO, "--space_id", "alice/tiny-vit-demo"])
    out, err = capsys.readouterr()
    assert code == 0, err
    space = hub_env.repo("alice/tiny-vit-demo", "space")
    assert space.sdk == "gradio"
    files = hub_env.files("alice/tiny-vit-demo", "space")
    from vit_finetune.demo import SPACE_FILES

    assert set(files) - {".gitattributes"} == {*SPACE_FILES, "model_id.txt", "README.md"}
    for name, source in SPACE_FILES.items():
        assert files[name] == source.read_bytes(), name
    assert files["model_id.txt"].decode().strip() == REPO
    assert space.variables["MODEL_ID"]["value"] == REPO
    requirements = files["requirements.txt"].decode().split()
    assert any(r.startswith("torch") for r in requirements) and any(r.startswith("transformers") for r in
                                                                    requirements)
    # Every third-party module the demo's files import is installed on the Space (gradio comes with the SDK
    # image); the others are the uploaded siblings.
    import ast

    imported = set()
    for name in (n for n in files if n.endswith(".py")):
        tree = ast.parse(files[name])
        imported |= {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    distributions = {re.split(r"[<>=!~;\[ ]", line)[0].lower() for line in requirements}
    provided = {"gradio"} | {{"pillow": "PIL"}.get(name, name) for name in distributions}
    siblings = {Path(name).stem for name in files if name.endswith(".py")}
    assert "vit_finetune" not in imported
    assert imported - set(sys.stdlib_module_names) - {"__future__"} - siblings <= provided
    card = SpaceCard(files["README.md"].decode()).data
    assert (card.sdk, card.app_file, card.models) == ("gradio", "app.py", [REPO])

    # Pointing the same Space at another model updates both the variable and the file.
    hub_env.add_repo("alice/other-vit", owner="alice", files={"config.json": b"{}"})
    assert hub.push_space_main(["--model_id", "alice/other-vit", "--space_id", "alice/tiny-vit-demo"]) == 0
    assert space.variables["MODEL_ID"]["value"] == "alice/other-vit"
    assert hub_env.files("alice/tiny-vit-demo", "space")["model_id.txt"].decode().strip() == "alice/other-vit"


def test_push_space_needs_the_model_on_the_hub(hub_env: LocalHub, capsys) -> None:
    code = hub.push_space_main(["--model_id", "alice/missing", "--space_id", "alice/missing-demo"])
    assert code == 1
    assert_one_line_error(capsys.readouterr().err, "alice/missing does not exist", "vit-finetune push")
    assert ("space", "alice/missing-demo") not in hub_env.repos


def test_push_space_refuses_an_app_that_needs_our_package(hub_env: LocalHub, tmp_path: Path, capsys) -> None:
    app = tmp_path / "app.py"
    app.write_text("import gradio as gr\nfrom vit_finetune.demo import main\n")
    code = hub.push_space_main(["--model_id", REPO, "--space_id", "alice/x-demo", "--app_file", str(app)])
    assert code == 1
    assert_one_line_error(capsys.readouterr().err, "imports vit_finetune", "a Space does not have")
    assert hub_env.requests == []
