"""The running demo: launched in a subprocess on 127.0.0.1, queried with gradio_client and a real browser.

Two app processes (a checkout launch and a Space-style launch) serve the whole module; starting one
costs seconds. The browser test drives
Debian's Chromium (`apt-get install -y chromium`) through Playwright's Python package and saves a
screenshot (to $DEMO_SCREENSHOT if set, else the test's temporary folder).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from test_demo import LABELS, make_model_folder, pattern_image, png_header_only, truncated_png

from vit_finetune.demo import SPACE_FILES

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
MAX_FILE_SIZE = 1024 * 1024  # the app below is started with --max_file_size 1mb


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(command: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", **env}
    with log.open("wb") as log_file:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT)


def wait_until_ready(process: subprocess.Popen, port: int, log: Path, timeout: float = 90) -> str:
    """Poll until the app answers on 127.0.0.1:port; fail with its log if it dies or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the demo exited with code {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/config", timeout=2).status_code == 200:
                return f"http://127.0.0.1:{port}/"
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the demo did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_folder(tmp_path_factory.mktemp("demo-app") / "model")


@dataclass
class RunningApp:
    url: str
    pid: int  # the app's own Python process, for its memory use


@pytest.fixture(scope="module")
def apps(model_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningApp]]:
    """Two running demos, started together to save time (each takes seconds to import and load):

    - "checkout": as a user starts it from a checkout, `python demo/app.py MODEL --server_port ...`;
    - "space": as a Hugging Face Space runs it: the files of SPACE_FILES (what push-space uploads) side by side,
      the model id in model_id.txt, `import vit_finetune` failing, and GRADIO_SERVER_NAME/PORT set by the launcher.
    """
    folder = tmp_path_factory.mktemp("apps")
    checkout_port, space_port = free_port(), free_port()
    checkout = launch(
        [sys.executable, str(REPO / "demo" / "app.py"), str(model_folder), "--server_name", "127.0.0.1",
         "--server_port", str(checkout_port), "--max_file_size", "1mb", "--device", "cpu"],
        cwd=REPO, env={}, log=folder / "checkout.log")
    space_dir = folder / "space"
    space_dir.mkdir()
    for name, source in SPACE_FILES.items():
        shutil.copy(source, space_dir / name)
    (space_dir / "model_id.txt").write_text(f"{model_folder}\n")
    space_launcher = ("import runpy, sys; sys.modules['vit_finetune'] = None; sys.argv = ['app.py']; "
                      "runpy.run_path('app.py', run_name='__main__')")
    space = launch(
        [sys.executable, "-c", space_launcher], cwd=space_dir, log=folder / "space.log",
        env={"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(space_port), "MODEL_ID": ""})
    try:
        yield {"checkout": RunningApp(wait_until_ready(checkout, checkout_port, folder / "checkout.log"), checkout.pid),
               "space": RunningApp(wait_until_ready(space, space_port, folder / "space.log"), space.pid)}
    finally:
        stop(checkout)
        stop(space)


@pytest.fixture(scope="module")
def app_url(apps: dict[str, RunningApp]) -> str:
    return apps["checkout"].url


@pytest.fixture(scope="module")
def client(app_url: str) -> Client:
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good and bad files to upload."""
    folder = tmp_path_factory.mktemp("uploads")
    files = {name: folder / filename for name, filename in [
        ("good", "good.png"), ("other", "other.jpg"), ("text", "notes.txt"), ("corrupt", "broken.png"),
        ("huge", "huge.png"), ("transparent", "transparent.png"), ("16bit", "scan16.png"),
    ]}
    pattern_image(1).save(files["good"])
    pattern_image(2).save(files["other"])
    files["text"].write_text("not an image")
    files["corrupt"].write_bytes(truncated_png(pattern_image(3, (200, 200))))
    files["huge"].write_bytes(png_header_only(10_000, 10_000))
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 10:30] = (255, 0, 0, 255)  # an opaque red square on a transparent background
    Image.fromarray(rgba, mode="RGBA").save(files["transparent"])
    Image.fromarray(np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40).save(files["16bit"])
    return files


# ------------------------------------------------------------------------------------------------
# gradio_client
# ------------------------------------------------------------------------------------------------


def test_classify_returns_labels_overlay_and_time(client: Client, inputs: dict[str, Path]) -> None:
    label, overlay_path, timing = client.predict(handle_file(inputs["good"]), 3, "rollout", api_name="/classify")
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(confidences) == set(LABELS)
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-4)
    assert label["label"] == max(confidences, key=confidences.get)
    overlay = Image.open(overlay_path)
    assert overlay.size == (192, 160)  # the 48x40 upload, enlarged 4x for display
    assert "Inference time" in timing and " ms" in timing

    label, _, _ = client.predict(handle_file(inputs["good"]), 1, "last_layer", api_name="/classify")
    assert len(label["confidences"]) == 1  # top-k is honoured


def test_the_overlay_changes_with_the_image(client: Client, inputs: dict[str, Path]) -> None:
    overlays = []
    for name in ("good", "other"):
        _, overlay_path, _ = client.predict(handle_file(inputs[name]), 3, "rollout", api_name="/classify")
        overlays.append(np.asarray(Image.open(overlay_path).convert("RGB"), np.int16))
    assert np.abs(overlays[0] - overlays[1]).mean() > 5


@pytest.mark.parametrize("bad, message", [
    ("text", "is not an image this app can read"),
    ("corrupt", "corrupt or truncated"),
    ("huge", "10000x10000 pixels"),
])
def test_bad_uploads_give_a_message_and_the_app_keeps_working(
        client: Client, inputs: dict[str, Path], bad: str, message: str) -> None:
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(inputs[bad]), 3, "rollout", api_name="/classify")
    label, _, _ = client.predict(handle_file(inputs["good"]), 3, "rollout", api_name="/classify")
    assert label["label"] in LABELS


@pytest.mark.parametrize("name", ["transparent", "16bit"])
def test_transparent_and_16_bit_images_are_classified(client: Client, inputs: dict[str, Path], name: str) -> None:
    label, overlay_path, _ = client.predict(handle_file(inputs[name]), 3, "rollout", api_name="/classify")
    assert label["label"] in LABELS
    assert Image.open(overlay_path).size == (200, 200)  # 40x40 enlarged 5x


def test_uploads_over_the_size_limit_are_refused(app_url: str, inputs: dict[str, Path]) -> None:
    # The server itself enforces --max_file_size (the browser and gradio_client also check it first).
    too_big = os.urandom(MAX_FILE_SIZE + 1000)
    response = httpx.post(f"{app_url}gradio_api/upload", files={"files": ("big.png", too_big)})
    assert response.status_code == 413 and "maximum allowed size" in response.text
    response = httpx.post(f"{app_url}gradio_api/upload", files={"files": ("good.png", inputs["good"].read_bytes())})
    assert response.status_code == 200


def test_several_images_become_a_gallery(client: Client, inputs: dict[str, Path]) -> None:
    files = [handle_file(inputs[name]) for name in ("good", "corrupt", "other")]
    gallery, summary = client.predict(files, "rollout", api_name="/classify_many")
    captions = [item["caption"] for item in gallery]
    # The corrupt file is skipped (with a warning in the page); the others are classified.
    assert [caption.split(":")[0] for caption in captions] == ["good.png", "other.jpg"]
    assert all(caption.split(": ")[1].split(" (")[0] in LABELS for caption in captions)
    assert "2 image(s)" in summary
    with pytest.raises(AppError, match="None of the files could be read"):
        client.predict([handle_file(inputs["corrupt"])], "rollout", api_name="/classify_many")


def test_page_has_examples_a_queue_and_an_upload_limit(app_url: str) -> None:
    config = httpx.get(f"{app_url}config").json()
    assert config["enable_queue"] is True
    assert config["max_file_size"] == MAX_FILE_SIZE
    (examples,) = [c for c in config["components"] if c["type"] == "dataset"]
    assert [Path(sample[0]["orig_name"]).stem for sample in examples["props"]["samples"]] == sorted(LABELS)


def test_runs_as_a_space_without_our_package(apps: dict[str, RunningApp], model_folder: Path,
                                            inputs: dict[str, Path]) -> None:
    space = Client(apps["space"].url, verbose=False)
    label, _, _ = space.predict(handle_file(inputs["good"]), 3, "rollout", api_name="/classify")
    assert label["label"] in LABELS
    config = httpx.get(f"{apps['space'].url}config").json()
    markdown = [c["props"].get("value") or "" for c in config["components"] if c["type"] == "markdown"]
    assert any(str(model_folder) in text for text in markdown)  # the model named in model_id.txt


# ------------------------------------------------------------------------------------------------
# Raw HTTP requests: what a client can name in a payload
# ------------------------------------------------------------------------------------------------

FILE_META = {"_type": "gradio.FileData"}  # the marker of a payload gradio treats as its own FileData


def call_api(app_url: str, api_name: str, data: list) -> tuple[str, object]:
    """POST to /gradio_api/call/<api_name> as any HTTP client can, and return the final (event, data)."""
    response = httpx.post(f"{app_url}gradio_api/call/{api_name}", json={"data": data}, timeout=60)
    response.raise_for_status()
    stream = httpx.get(f"{app_url}gradio_api/call/{api_name}/{response.json()['event_id']}", timeout=60).text
    event, payload = None, None
    for line in stream.splitlines():  # server-sent events: "event: complete|error" then "data: <json>"
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event in ("complete", "error"):
            payload = json.loads(line.removeprefix("data: "))
    assert event in ("complete", "error"), stream
    return event, payload


def data_url(image: Image.Image) -> str:
    png = io.BytesIO()
    image.save(png, format="PNG")
    return "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()


def noise_image(side: int) -> Image.Image:
    """Random pixels: a PNG of about 3 * side**2 bytes, as PNG cannot compress noise."""
    return Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8))


def test_a_request_cannot_read_files_on_the_server(app_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    # A private file on the server, outside gradio's upload folder, and a path beside it that does not exist
    # (names of equal length: some refusals echo the request, shortened to a fixed length).
    private = tmp_path_factory.mktemp("private")
    Image.new("RGB", (40, 40), (255, 0, 255)).save(private / "secret.png")
    existing, absent = str(private / "secret.png"), str(private / "absent.png")
    requests = {
        "classify": lambda payload: [payload, 3, "rollout"],
        "classify_many": lambda payload: [[payload], "rollout"],
    }
    for api_name, arguments in requests.items():
        for meta in ({}, {"meta": FILE_META}):  # a plain dict, and one claiming to be gradio's FileData
            event, answer = call_api(app_url, api_name, arguments({"path": existing, **meta}))
            assert event == "error", f"/{api_name} read {existing} and answered {answer}"
            event, answer_for_absent = call_api(app_url, api_name, arguments({"path": absent, **meta}))
            # The same answer whether the file exists or not: a client learns nothing about the server's files.
            assert answer["error"] == answer_for_absent["error"].replace("absent.png", "secret.png")
    _, answer = call_api(app_url, "classify", [{"path": existing}, 3, "rollout"])
    assert answer["error"] == "This file was not uploaded to the app. Please upload the image again."


def test_data_urls_obey_the_upload_limit(app_url: str) -> None:
    event, answer = call_api(app_url, "classify", [{"url": data_url(pattern_image(4))}, 3, "rollout"])
    assert event == "complete" and answer[0]["label"] in LABELS  # inline images are fine within the limit
    too_big = data_url(noise_image(700))  # a valid 1.4 MB PNG: over the app's --max_file_size of 1 MB
    assert len(too_big) * 3 / 4 > MAX_FILE_SIZE
    event, answer = call_api(app_url, "classify", [{"url": too_big}, 3, "rollout"])
    assert event == "error" and "this app accepts at most 1.00 MB" in answer["error"]


def resident_memory(pid: int) -> int:
    """The process's resident set size in bytes, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory use from /proc (Linux)")
def test_data_url_requests_leave_nothing_behind(apps: dict[str, RunningApp]) -> None:
    app = apps["checkout"]
    image = data_url(noise_image(550))  # about 0.9 MB of PNG, 1.2 MB of base64: within the limit
    for _ in range(10):  # warm up: the allocator's arenas grow to their working size first
        call_api(app.url, "classify", [{"url": image}, 3, "rollout"])
    before = resident_memory(app.pid)
    for _ in range(50):  # each /call request is a session of its own, which gradio keeps
        event, _ = call_api(app.url, "classify", [{"url": image}, 3, "rollout"])
        assert event == "complete"
    growth = resident_memory(app.pid) - before
    # Keeping each request's data: URL would add 50 * 1.2 MB = 60 MB.
    assert growth < 0.5 * 50 * len(image), f"the app grew by {growth / 1e6:.0f} MB over 50 requests"


# ------------------------------------------------------------------------------------------------
# A real browser
# ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Chromium at /usr/bin/chromium: apt-get install -y chromium")
def test_in_a_real_browser(app_url: str, inputs: dict[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    screenshot = Path(os.environ.get("DEMO_SCREENSHOT", tmp_path / "demo.png"))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app_url)
            upload = page.locator("#input-image input[type=file]")

            # A broken file: a readable message in the page.
            upload.set_input_files(inputs["corrupt"])
            expect(page.get_by_test_id("toast-body").first).to_contain_text("corrupt or truncated", timeout=20_000)

            # The next upload works: labels, overlay and inference time appear.
            upload.set_input_files(inputs["good"])
            confidence_sets = page.locator("#prediction [data-testid$='-confidence-set']")
            expect(confidence_sets).to_have_count(len(LABELS), timeout=20_000)
            shown = {text.split("\n")[0] for text in confidence_sets.all_inner_texts()}
            assert shown == set(LABELS)
            overlay = page.locator("#attention-map img")
            expect(overlay).to_be_visible()
            page.wait_for_function("() => document.querySelector('#attention-map img').naturalWidth === 192")
            expect(page.locator("#inference-time")).to_contain_text("ms")
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert Image.open(screenshot).size[0] == 1280
