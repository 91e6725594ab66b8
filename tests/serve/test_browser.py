"""End to end: `multimodel serve` in a subprocess, driven by headless Chromium through Playwright.

Uploads an image, an audio file and a sentence as a person would, reads the answers off the
page, and saves a screenshot of each panel under ``tests/artifacts/serve/`` (or
``$MULTIMODEL_TEST_ARTIFACTS``). Uses Debian's Chromium (``/usr/bin/chromium``), installed
with apt-get when missing and possible; never a browser downloaded by Playwright.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UPLOAD_MB = 0.2
TIMING = re.compile(r"^\d+ ms$|^\d+\.\d\d s$")


@pytest.fixture(scope="session")
def chromium(tmp_path_factory) -> Path:
    """Debian's Chromium, apt-get installed when missing (as root, with apt); else skip."""
    pytest.importorskip("playwright.sync_api", reason="needs Python Playwright: pip install playwright")
    if not CHROMIUM.exists():
        if shutil.which("apt-get") and os.geteuid() == 0:
            from filelock import FileLock

            base = tmp_path_factory.getbasetemp()
            lock = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "apt.lock"
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            with FileLock(str(lock)):
                if not CHROMIUM.exists():
                    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
                    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], env=env,
                                   capture_output=True, timeout=900)
        if not CHROMIUM.exists():
            pytest.skip(f"no {CHROMIUM}, and `apt-get install chromium chromium-driver` was not possible"
                        " (needs root and apt)")
    return CHROMIUM


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("MULTIMODEL_TEST_ARTIFACTS",
                                 Path(__file__).resolve().parents[1] / "artifacts" / "serve"))
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder.parent / ".gitignore"
    if "MULTIMODEL_TEST_ARTIFACTS" not in os.environ and not ignore.exists():
        ignore.write_text("*\n")  # test output, never committed
    print(f"\nscreenshots of the web demo: {folder}")
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    """`python -m multimodel serve` on a free loopback port; its base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "multimodel", "serve", str(tiny_checkpoint.run_dir),
                                 "--port", str(port), "--max-upload-mb", str(UPLOAD_MB)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url + "/api/info", timeout=2) as response:
                    json.load(response)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not answer within 90 s:\n{log.read_text()}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        fake_microphone = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS + fake_microphone)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    yield page
    page.close()
    assert not errors, errors  # no JavaScript exceptions


def _answers(panel) -> dict[str, dict]:
    """Each answer on a panel, by task: output, token, timing text."""
    out = {}
    for card in panel.locator(".answer").all():
        out[card.get_attribute("data-task")] = {
            "output": card.locator("[data-role=output]").inner_text(),
            "token": card.locator("[data-role=token]").inner_text(),
            "seconds": card.locator("[data-role=seconds]").inner_text(),
        }
    return out


def _shot(panel, artifacts: Path, name: str) -> None:
    path = artifacts / f"{name}.png"
    panel.screenshot(path=str(path))
    print(f"screenshot: {path}")


def test_image_panel_shows_class_top5_and_caption(page, tiny_checkpoint, make_png, artifacts, tmp_path):
    image = tmp_path / "shirt.png"
    image.write_bytes(make_png((28, 28)))
    panel = page.locator("#image-panel")
    page.set_input_files("#image-file", str(image))
    page.click("#image-submit")
    expected = 2 if "fashion_captions" in tiny_checkpoint.tasks else 1
    panel.locator(".answer").nth(expected - 1).wait_for(timeout=30_000)
    answers = _answers(panel)
    assert answers["digits"]["output"] in [str(i) for i in range(10)]
    assert answers["digits"]["token"] == "no token (classifier)"
    assert TIMING.match(answers["digits"]["seconds"])
    assert panel.locator("[data-role=top] li").count() == 5
    if expected == 2:
        assert answers["fashion_captions"]["token"] == "To-English"
        assert answers["fashion_captions"]["output"].strip()
        assert TIMING.match(answers["fashion_captions"]["seconds"])
    _shot(panel, artifacts, "image-panel")


def test_audio_panel_shows_a_transcript(page, tiny_checkpoint, make_wav, artifacts, tmp_path):
    tiny_checkpoint.require("speech_numbers")
    audio = tmp_path / "tone.wav"
    audio.write_bytes(make_wav(1.0, 16000))
    panel = page.locator("#audio-panel")
    page.set_input_files("#audio-file", str(audio))
    page.click("#audio-submit")
    panel.locator(".answer").wait_for(timeout=30_000)
    answer = _answers(panel)["speech_numbers"]
    assert answer["token"] == "To-English" and answer["output"].strip() and TIMING.match(answer["seconds"])
    _shot(panel, artifacts, "audio-panel")


def test_audio_panel_records_from_the_microphone(page, tiny_checkpoint):
    """Chromium's fake microphone (a beep) → a WAV made in the page → a transcript."""
    tiny_checkpoint.require("speech_numbers")
    panel = page.locator("#audio-panel")
    record = page.locator("#audio-record")
    assert record.is_visible()
    record.click()
    page.wait_for_function("document.querySelector('#audio-record').textContent.includes('Stop')")
    page.wait_for_timeout(1000)
    record.click()
    assert panel.locator(".file span").inner_text() == "recording.wav"
    page.wait_for_function("document.querySelector('#audio-preview').duration > 0.5", timeout=10_000)
    page.click("#audio-submit")
    panel.locator(".answer").wait_for(timeout=30_000)
    assert _answers(panel)["speech_numbers"]["token"] == "To-English"


def test_text_panel_translates(page, artifacts):
    panel = page.locator("#text-panel")
    assert page.locator("#text-to option[value=french]").is_disabled()  # not in this checkpoint
    page.fill("#text-input", "twenty-one")
    page.select_option("#text-to", "german")
    page.click("#text-submit")
    panel.locator(".answer").wait_for(timeout=30_000)
    answer = _answers(panel)["numbers_en_de"]
    assert answer["token"] == "To-German" and answer["output"].strip() and TIMING.match(answer["seconds"])
    _shot(panel, artifacts, "text-panel-translation")


def test_text_panel_parses(page, artifacts):
    panel = page.locator("#text-panel")
    page.fill("#text-input", "the cat saw a dog .")
    page.select_option("#text-to", "parse-tree")
    page.click("#text-submit")
    panel.locator(".answer").wait_for(timeout=30_000)
    answer = _answers(panel)["grammar_parsing"]
    assert answer["token"] == "To-Parse-Tree" and TIMING.match(answer["seconds"])
    # 4 training steps rarely give a well-formed tree: then the page says why and shows the output
    assert panel.locator("[data-role=tree]").count() + panel.locator("[data-role=tree-error]").count() == 1
    _shot(panel, artifacts, "text-panel-parse")


def test_parse_tree_is_drawn_as_a_tree(page, artifacts):
    """The drawing itself, from a well-formed answer the server is made to give."""
    tree = "S\n  NP\n    DT the\n    NN cat\n  VP\n    VBD saw\n    NP\n      DT a\n      NN dog\n  . ."
    canned = {"task": "grammar_parsing", "task_token": "To-Parse-Tree", "seconds": 0.25, "tree": tree,
              "output": "(S (NP DT NN ) (VP VBD (NP DT NN ) ) . )"}
    page.route("**/api/text", lambda route: route.fulfill(status=200, content_type="application/json",
                                                         body=json.dumps(canned)))
    panel = page.locator("#text-panel")
    page.fill("#text-input", "the cat saw a dog .")
    page.select_option("#text-to", "parse-tree")
    page.click("#text-submit")
    drawn = panel.locator("[data-role=tree]")
    drawn.wait_for(timeout=10_000)
    labels = [t.split("\n")[0] for t in drawn.locator(".node").all_inner_texts()]
    assert labels == ["S", "NP", "DT", "NN", "VP", "VBD", "NP", "DT", "NN", "."]
    assert drawn.locator(".word").all_inner_texts() == ["the", "cat", "saw", "a", "dog", "."]
    assert drawn.locator(":scope > li > ul > li").count() == 3  # S has NP, VP and '.'
    assert _answers(panel)["grammar_parsing"]["seconds"] == "250 ms"
    _shot(panel, artifacts, "text-panel-tree")


def test_bad_inputs_are_explained_and_the_server_goes_on(page, make_png, artifacts, tmp_path):
    image_panel = page.locator("#image-panel")
    not_image = tmp_path / "notes.png"
    not_image.write_text("these are notes, not pixels\n")
    page.set_input_files("#image-file", str(not_image))
    page.click("#image-submit")
    error = image_panel.locator(".status.error")
    error.wait_for(timeout=15_000)
    assert "notes.png is not an image" in error.inner_text()

    big = tmp_path / "big.png"  # refused by the page before uploading
    big.write_bytes(b"\0" * int(UPLOAD_MB * 1e6 * 2))
    page.set_input_files("#image-file", str(big))
    page.click("#image-submit")
    assert "accepts files up to 0.2 MB" in error.inner_text()

    page.evaluate("INFO.max_upload_bytes = 1e12")  # and by the server, when the page lets it through
    page.click("#image-submit")
    page.wait_for_function("document.querySelector('#image-panel .status').textContent.includes('--max-upload-mb')",
                           timeout=15_000)
    assert "the request is 0.4 MB" in error.inner_text()

    text_panel = page.locator("#text-panel")
    page.fill("#text-input", "   ")
    page.click("#text-submit")
    text_panel.locator(".status.error").wait_for(timeout=15_000)
    assert "empty" in text_panel.locator(".status.error").inner_text()
    _shot(page, artifacts, "errors")

    good = tmp_path / "good.png"
    good.write_bytes(make_png())
    page.set_input_files("#image-file", str(good))
    page.click("#image-submit")
    image_panel.locator(".answer").first.wait_for(timeout=30_000)
    assert image_panel.locator(".status.error").count() == 0


def _run_example(page, panel_id: str, selector: str):
    """Click a held-out example on a panel; its answer card."""
    page.wait_for_selector("body[data-examples=ready]", timeout=30_000)
    panel = page.locator(panel_id)
    panel.locator(selector).first.click()
    card = panel.locator(".answer.example-answer")
    card.wait_for(timeout=30_000)
    return panel, card


def test_a_held_out_image_runs_with_one_click(page, artifacts):
    panel, card = _run_example(page, "#image-panel", "button.example[data-task=digits]")
    assert panel.locator("button.example.thumb img").count() >= 4  # digits (and captions) thumbnails
    assert card.get_attribute("data-task") == "digits"
    assert card.locator("[data-role=output]").inner_text() in [str(i) for i in range(10)]
    assert card.locator("[data-role=reference] .output").inner_text() in [str(i) for i in range(10)]
    assert card.locator("[data-role=match]").inner_text() in ("✓ matches the reference",
                                                              "✗ differs from the reference")
    page.wait_for_function("(() => { const img = document.querySelector("
                           "'.example-answer [data-role=example-input] img');"
                           " return img && img.complete && img.naturalWidth > 0; })()", timeout=10_000)
    assert card.locator("[data-role=example-input] img").evaluate("img => img.naturalWidth") == 8  # the 8×8 digit
    _shot(panel, artifacts, "image-panel-example")


def test_a_held_out_utterance_plays_and_runs(page, tiny_checkpoint, artifacts):
    tiny_checkpoint.require("speech_numbers")
    page.wait_for_selector("body[data-examples=ready]", timeout=30_000)
    clip = page.locator("#audio-panel .utterance audio").first
    clip.evaluate("audio => { audio.preload = 'auto'; audio.load(); }")
    page.wait_for_function("document.querySelector('#audio-panel .utterance audio').duration > 0.3", timeout=15_000)
    panel, card = _run_example(page, "#audio-panel", "button.example[data-task=speech_numbers]")
    assert card.locator("[data-role=token]").inner_text() == "To-English"
    assert card.locator("[data-role=reference] .output").inner_text().strip()
    _shot(panel, artifacts, "audio-panel-example")


def test_a_held_out_sentence_runs_and_fills_the_form(page, artifacts):
    panel, card = _run_example(page, "#text-panel", "button.example[data-task=numbers_en_de]")
    assert card.locator("[data-role=token]").inner_text() == "To-German"
    sentence = panel.locator("button.example[data-task=numbers_en_de]").first.get_attribute("data-text")
    assert page.input_value("#text-input") == sentence and page.input_value("#text-to") == "german"
    assert card.locator("[data-role=example-input]").inner_text().count(sentence) == 1
    assert card.locator("[data-role=reference] .output").inner_text().strip()
    parse, tree_card = _run_example(page, "#text-panel", "button.example[data-task=grammar_parsing]")
    assert tree_card.locator("[data-role=token]").inner_text() == "To-Parse-Tree"
    assert page.input_value("#text-to") == "parse-tree"
    _shot(panel, artifacts, "text-panel-example")


def test_scores_show_not_evaluated_without_eval_json(page):
    lines = page.locator("[data-role=score]")
    assert lines.count() == len(page.evaluate("INFO.tasks"))
    assert all(t == "not evaluated" for t in page.locator("[data-role=not-evaluated]").all_inner_texts())
    assert "not evaluated" in page.locator("#scores-note").inner_text()


def test_scores_show_each_metric_beside_its_blind_control(browser, server, artifacts):
    """The page's drawing of eval.json scores, from an /api/info answer the server is made to give."""
    def with_scores(route):
        info = route.fetch().json()
        for task in info["tasks"]:
            if task["name"] == "digits":
                task["scores"] = {"metrics": {"accuracy": 62.04, "blind_accuracy": 12.3}, "token_accuracy": 62.0,
                                  "log_perplexity": 1.0, "num_examples": 200, "headline": [
                                      {"metric": "accuracy", "label": "top-1 acc %", "value": 62.04, "blind": 12.3,
                                       "lower_is_better": False}],
                                  "groups": [{"field": "style", "metric": "accuracy", "label": "top-1 acc %",
                                              "lower_is_better": False, "values": [
                                                  {"value": "printed", "score": 70.25, "count": 120},
                                                  {"value": "written", "score": 50.0, "count": 80}]}]}
        info["scores_file"], info["scores_note"] = "runs/demo/eval.json", None
        route.fulfill(status=200, content_type="application/json", body=json.dumps(info))

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.route("**/api/info", with_scores)
        page.goto(server + "/")
        page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        digits = page.locator("#image-panel [data-role=score][data-task=digits]")
        assert digits.locator("[data-metric=accuracy]").inner_text() == "top-1 acc 62.0% (blind 12.3%)"
        blind = digits.locator("[data-role=blind]")
        assert "content removed" in blind.get_attribute("title")
        assert "on 200 held-out examples" in digits.inner_text()
        assert (digits.locator("[data-role=groups][data-field=style]").inner_text()
                == "top-1 acc by style: printed 70.3% (120) · written 50.0% (80)")
        assert "blind: the same model" in page.locator("#scores-note").inner_text()
        _shot(page.locator("#image-panel"), artifacts, "image-panel-scores")
    finally:
        page.close()
