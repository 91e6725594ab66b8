"""Tasks declared in a config, through the command line, as a user runs them.

One config file declares the task of every worked example of src/multimodel/configs/examples/
(one per kind of reader, the Hugging Face reader on a ``save_to_disk`` folder, Parquet shards
and audio among them) over fixture data written here in each reader's format, beside the
built-in ``digits`` task. ``multimodel train`` trains them all jointly for a few steps (every
task gets steps); the config file is then deleted, and ``multimodel eval``, ``multimodel
predict``, the web demo's API, the experiments and ``multimodel analyze-routing`` work from the
checkpoint alone (the specs are saved in it). One run is shared by every test here (under
pytest-xdist the workers share it, a file lock guarding the training). Beside it: ``multimodel
tasks --config`` lists declared tasks with their data status, and a mistyped spec field, a
missing path and a column that does not exist are one-line errors (exit 2).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from multimodel import cli
from multimodel.config import load_config
from multimodel.tasks import TASKS

from declared_data import FIXTURES, save_image, write_audio, write_image_folder  # tests/ is on sys.path

BUILTIN = "digits"
SIZES = ["data.train_size=8", "data.eval_size=4"]


def example_spec(name: str):
    (spec,) = load_config(f"examples/{name}").data.declared_tasks
    return spec


CONFIG = '''"""The declared task of every worked example, on fixture data, beside the built-in {builtin} task."""

import dataclasses

from multimodel.config import load_config

NAMES = {names!r}
EXAMPLES = [load_config(f"examples/{{name}}") for name in NAMES]
SPECS = tuple(spec for example in EXAMPLES for spec in example.data.declared_tasks)
TINY = load_config("tiny")
TOKENS = tuple(dict.fromkeys(token for example in EXAMPLES for token in example.model.task_tokens))
CONFIG = dataclasses.replace(
    TINY,
    model=dataclasses.replace(TINY.model, task_tokens=TOKENS),  # To-Spanish from examples/parallel_text
    data=dataclasses.replace(TINY.data, tasks=({builtin!r}, *(spec.name for spec in SPECS)), declared_tasks=SPECS,
                             data_dir={data_dir!r}),
)
'''


@dataclass
class DeclaredRun:
    root: Path
    run_dir: Path
    config: Path  # deleted after training
    task_steps: dict[str, int]
    evaluation: dict[str, dict]  # task → its record of `multimodel eval --json`
    inputs: dict[str, Path]  # modality → a file to predict from


def main(*argv: str) -> tuple[int, str, str]:
    """``multimodel ARGV`` in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def declared_run(shared_tmp_dir: Path) -> DeclaredRun:
    pytest.importorskip("datasets")
    from filelock import FileLock

    root = shared_tmp_dir / "declared-run"
    root.mkdir(exist_ok=True)
    with FileLock(str(root) + ".lock"):
        summary = root / "summary.json"
        if not summary.exists():
            data_dir = root / "data"
            for write in FIXTURES.values():
                write(data_dir)
            config = root / "mine.py"
            config.write_text(CONFIG.format(names=tuple(FIXTURES), builtin=BUILTIN, data_dir=str(data_dir)))
            run_dir = root / "run"
            code, out, err = main("train", "--config", config, "--run-dir", run_dir, "--no-progress", "--no-eval",
                                  "train.steps=30", "train.mixing=uniform", "train.log_every=10",
                                  "train.checkpoint_every=30", *SIZES)
            assert code == 0, err
            config.unlink()  # from here on, only the checkpoint knows the declared tasks
            code, out, err = main("eval", run_dir, "--no-blind", "--json", root / "eval.json")
            assert code == 0, err
            meta = json.loads((run_dir / "checkpoints" / "step-0000030" / "meta.json").read_text())
            inputs = {"image": save_image(root / "red.png", size=(40, 30)),
                      "audio": write_audio(root / "tone.wav", seconds=0.3)}
            summary.write_text(json.dumps({"task_steps": meta["task_steps"],
                                           "inputs": {k: str(v) for k, v in inputs.items()}}))
        saved = json.loads(summary.read_text())
    evaluation = {r["task"]: r for r in json.loads((root / "eval.json").read_text())}
    return DeclaredRun(root, root / "run", root / "mine.py", saved["task_steps"], evaluation,
                       {k: Path(v) for k, v in saved["inputs"].items()})


SENTENCE = {"parallel_text": "the house", "ptb_treebank": "The cat sat .", "hf_parquet_text": "a house"}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_declared_task_trains_evaluates_and_predicts_without_its_config(name, declared_run):
    """The example's task trained beside the built-in one, was evaluated on its held-out data,
    and answers `multimodel predict` from the checkpoint after the config file was deleted."""
    spec = example_spec(name)
    assert not declared_run.config.exists()
    assert declared_run.task_steps[spec.name] >= 1 and declared_run.task_steps[BUILTIN] >= 1
    record = declared_run.evaluation[spec.name]
    assert record["num_examples"] >= 1 and record["metrics"]

    modality = spec.input_modality or {"parallel_text": "text", "ptb": "text", "coco_captions": "image",
                                       "image_folder": "image", "librispeech": "audio",
                                       "audio_manifest": "audio"}[spec.reader]
    given = ["--text", SENTENCE[name]] if modality == "text" else [f"--{modality}", declared_run.inputs[modality]]
    code, out, err = main("predict", declared_run.run_dir, *given, "--task", spec.name, "--beam-size", "1")
    assert code == 0, err
    (line,) = out.strip().splitlines()[:1]
    assert line.startswith(f"[{spec.name}")
    if "class:" in line:  # a classifier names one of the classes read from its data
        label = line.split("class: ")[1].split()[0]
        assert label in ("cat", "dog", "fox", "angular", "bean_rust", "healthy")


def test_predict_routes_inputs_to_declared_and_builtin_tasks(declared_run):
    """Without --task: an image goes to every image task, built-in and declared; --to reaches a
    task token the config added (To-Spanish)."""
    code, out, err = main("predict", declared_run.run_dir, "--image", declared_run.inputs["image"], "--beam-size", "1")
    assert code == 0, err
    answered = [line.split("]")[0].strip("[").split(",")[0] for line in out.strip().splitlines()]
    assert answered == [BUILTIN, "my_coco", "my_images", "beans"]
    code, out, err = main("predict", declared_run.run_dir, "--text", "the house", "--to", "spanish")
    assert code == 0 and out.startswith("[my_en_es, To-Spanish]"), err
    code, out, err = main("predict", declared_run.run_dir, "--text", "the house", "--task", "beans")
    assert code == 2 and err.strip() == "multimodel predict: error: task beans reads image, not text"


def test_predict_in_a_fresh_process_needs_only_the_checkpoint(declared_run):
    out = subprocess.run([sys.executable, "-m", "multimodel", "predict", str(declared_run.run_dir), "--image",
                          str(declared_run.inputs["image"]), "--task", "my_images"],
                         capture_output=True, text=True, timeout=120, cwd=declared_run.root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("[my_images] class: ")


def test_web_demo_serves_declared_tasks_without_their_config(declared_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from multimodel.predict import Predictor
    from multimodel.serve.app import create_app

    client = TestClient(create_app(Predictor.from_checkpoint(declared_run.run_dir)))
    info = client.get("/api/info").json()
    declared = [spec.name for spec in map(example_spec, FIXTURES)]
    assert [t["name"] for t in info["tasks"]] == [BUILTIN, *declared]
    assert info["image"] and info["audio"] and info["text_targets"] == ["german", "parse-tree", "spanish"]
    images = next(t for t in info["tasks"] if t["name"] == "my_images")
    assert images["labels"] == ["cat", "dog", "fox"] and images["target_modality"] == "class_label:3"

    listing = {t["task"]: t for t in client.get("/api/examples").json()["tasks"]}
    for name in declared:  # each task's held-out examples, read from its data by the saved spec
        assert listing[name]["unavailable"] is None and listing[name]["examples"], listing[name]
        answer = client.post(f"/api/examples/{name}/0")
        assert answer.status_code == 200 and answer.json()["prediction"]["task"] == name, answer.text
    assert client.get("/api/examples/my_images/0/input").headers["content-type"] == "image/png"
    assert client.get("/api/examples/my_speech/0/input").headers["content-type"] == "audio/wav"
    answer = client.post("/api/text", json={"text": "the house", "to": "spanish"})
    assert answer.status_code == 200 and answer.json()["task"] == "my_en_es"


def test_experiments_and_routing_analysis_take_declared_tasks(declared_run, tmp_path):
    from multimodel.experiments import transfer
    from multimodel.pretrained import load_pretrained

    cfg = load_pretrained(declared_run.run_dir).config  # the declared specs come from the checkpoint
    plan = transfer.plan(cfg, 1, parsing_task="my_wsj_parsing", image_task="my_images")
    assert [spec.arm.tasks for spec in plan.specs[:2]] == [("my_wsj_parsing",), ("my_wsj_parsing", "my_images")]

    code, out, err = main("experiment", "baselines", "--run", declared_run.run_dir, "--tasks", "my_images",
                          "--steps", "1", "--out", tmp_path / "baselines", "--no-progress")
    assert code == 0, err
    assert "| my_images | top-1 acc % |" in (tmp_path / "baselines" / "results.md").read_text()

    code, out, err = main("analyze-routing", declared_run.run_dir, "--out", tmp_path / "routing")
    assert code == 0, err
    routed = json.loads((tmp_path / "routing" / "routing_analysis.json").read_text())["source"]["examples_per_task"]
    assert set(routed) == {BUILTIN, *(example_spec(name).name for name in FIXTURES)}


# ----------------------------------------------------------------------------------------
# multimodel tasks --config, and one-line errors


def test_tasks_lists_declared_tasks_with_their_data_status(tmp_path):
    write_image_folder(tmp_path)
    config = tmp_path / "mine.py"
    config.write_text(
        "from multimodel.config import Config, DataConfig, TaskSpec\n"
        "CONFIG = Config(data=DataConfig(tasks=('my_images', 'digits'), declared_tasks=(\n"
        "    TaskSpec(name='my_images', reader='image_folder', paths={'train': 'my_images/train',"
        " 'test': 'my_images/val'}),\n"
        "    TaskSpec(name='elsewhere', reader='librispeech', paths={'train': 'nowhere', 'test': 'nowhere'}),\n"
        "    TaskSpec(name='wrong', reader='coco_captions', target_modality='class_label', labels=('a', 'b'),\n"
        "             paths={'train': 'coco', 'test': 'coco'}),\n"
        ")))\n")
    code, out, err = main("tasks", "--config", config, f"data.data_dir={str(tmp_path)!r}")
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line and not line.startswith(" ")}
    assert rows["my_images"][1:] == ["declared", "(image_folder)", "image", "→", "class_label:3", "-", "ok"]
    assert rows["elsewhere"][-1] == "missing" and rows["wrong"][-1] == "error"
    assert rows["digits"][-1] == "ok" and set(TASKS) <= set(rows)
    said = " ".join(out.split())  # the problem lines are wrapped at 100 columns
    assert f"task elsewhere: data.declared_tasks.elsewhere.paths.train: '{tmp_path / 'nowhere'}' not found" in said
    assert "task wrong: data.declared_tasks.wrong.target_modality must be 'text' for reader coco_captions" in said

    code, out, err = main("info", "--config", config, f"data.data_dir={str(tmp_path)!r}")  # the tasks it trains
    assert code == 0 and "M parameters)" in out, err
    code, out, err = main("info", "--config", config, f"data.data_dir={str(tmp_path / 'elsewhere')!r}")
    assert code == 2 and "task my_images: its number of classes comes from its data" in err


def _one_line_error(argv: list, capsys) -> str:
    capsys.readouterr()  # what writing the fixture data printed
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_mistyped_spec_field_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "mine.py"
    config.write_text("from multimodel.config import Config, DataConfig, TaskSpec\n"
                      "CONFIG = Config(data=DataConfig(declared_tasks=(\n"
                      "    TaskSpec(name='mine', reader='image_folder', path={'train': 'a', 'test': 'a'}),)))\n")
    err = _one_line_error(["train", "--config", config, "--run-dir", tmp_path / "run"], capsys)
    assert err.startswith(f"multimodel train: error: {config}, line 3: TaskSpec() got an unexpected keyword"
                          " argument 'path' (did you mean 'paths'?)")
    assert not (tmp_path / "run").exists()


def test_missing_path_is_a_one_line_error(tmp_path, capsys):
    err = _one_line_error(["train", "--config", "examples/image_folder", "--run-dir", tmp_path / "run",
                           f"data.data_dir={str(tmp_path)!r}", "data.tasks=my_images,digits"], capsys)
    assert (f"data.declared_tasks.my_images.paths.train: '{tmp_path / 'my_images' / 'train'}' not found"
            in err)


@pytest.mark.parametrize("name, field, wrong", [("hf_images", "target", "label"),
                                                ("audio_manifest", "input", "wav")])
def test_column_that_does_not_exist_is_a_one_line_error(name, field, wrong, tmp_path, capsys):
    pytest.importorskip("datasets")
    FIXTURES[name](tmp_path)
    spec = example_spec(name)
    config = tmp_path / "mine.py"  # the example, its spec naming a column the data lacks
    config.write_text("import dataclasses\n"
                      "from multimodel.config import load_config\n"
                      f"EXAMPLE = load_config('examples/{name}')\n"
                      "(SPEC,) = EXAMPLE.data.declared_tasks\n"
                      f"BAD = dataclasses.replace(SPEC, columns={{**SPEC.columns, {field!r}: {wrong!r}}})\n"
                      "CONFIG = dataclasses.replace(EXAMPLE, data=dataclasses.replace(EXAMPLE.data,"
                      " declared_tasks=(BAD,)))\n")
    err = _one_line_error(["train", "--config", config, "--run-dir", tmp_path / "run",
                           f"data.data_dir={str(tmp_path)!r}", f"data.tasks={spec.name},{BUILTIN}", *SIZES], capsys)
    assert f"data.declared_tasks.{spec.name}.columns.{field}:" in err and repr(wrong) in err
