"""The checkpoint's held-out scores on the page: its run's eval.json, each metric beside its blind control."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from multimodel.serve import create_app
from multimodel.serve.scores import BLIND_EXPLANATION, read_scores, run_dir_of

EVAL = [
    {"task": "digits", "metrics": {"accuracy": 62.0, "top5": 91.5, "blind_accuracy": 12.3, "blind_top5": 50.0},
     "token_accuracy": 62.0, "log_perplexity": 1.25, "examples": [], "num_examples": 200, "seconds": 1.0},
    {"task": "speech_numbers", "metrics": {"wer": 40.5, "blind_wer": 99.0}, "token_accuracy": 70.0,
     "log_perplexity": 0.9, "examples": [], "num_examples": 200, "seconds": 3.0,
     "breakdown": {"voice": {"en-029": {"count": 26.0, "wer": 72.2}, "en-us-nyc": {"count": 24.0, "wer": 4.4},
                             "broken": {"count": 3.0, "wer": math.nan}}}},
    {"task": "numbers_en_de", "metrics": {"bleu": math.nan}, "token_accuracy": math.nan,  # json writes NaN
     "log_perplexity": 2.0, "examples": [], "num_examples": 4, "seconds": 0.5},
]


def _run(tmp_path: Path, steps=(4,), records=EVAL) -> Path:
    """A run directory with ``checkpoints/step-*`` folders and, unless ``records`` is None, an eval.json."""
    run = tmp_path / "run"
    for step in steps:
        (run / "checkpoints" / f"step-{step:07d}").mkdir(parents=True)
    if records is not None:
        (run / "eval.json").write_text(json.dumps(records))
    return run


def _info(predictor, scores) -> dict:
    with TestClient(create_app(predictor, scores=scores)) as c:
        response = c.get("/api/info")
    assert response.status_code == 200, response.text
    return response.json()


def test_scores_appear_beside_their_blind_control(predictor, tmp_path):
    run = _run(tmp_path)
    info = _info(predictor, read_scores(run / "checkpoints" / "step-0000004"))
    assert info["scores_file"] == str(run / "eval.json") and info["scores_note"] is None
    assert info["blind_control"] == BLIND_EXPLANATION and "content removed" in BLIND_EXPLANATION
    by_task = {t["name"]: t["scores"] for t in info["tasks"]}
    digits = by_task["digits"]
    assert digits["headline"] == [
        {"metric": "accuracy", "label": "top-1 acc %", "value": 62.0, "blind": 12.3, "lower_is_better": False},
        {"metric": "top5", "label": "top-5 acc %", "value": 91.5, "blind": 50.0, "lower_is_better": False}]
    assert digits["metrics"]["blind_accuracy"] == 12.3
    assert (digits["token_accuracy"], digits["log_perplexity"], digits["num_examples"]) == (62.0, 1.25, 200)
    if "speech_numbers" in by_task:
        wer, = by_task["speech_numbers"]["headline"]
        assert (wer["value"], wer["blind"], wer["lower_is_better"]) == (40.5, 99.0, True)
        voice, = by_task["speech_numbers"]["groups"]  # its headline metric per voice; NaN left out
        assert (voice["field"], voice["metric"], voice["lower_is_better"]) == ("voice", "wer", True)
        assert voice["values"] == [{"value": "en-029", "score": 72.2, "count": 26},
                                   {"value": "en-us-nyc", "score": 4.4, "count": 24}]
    assert digits["groups"] == []  # no breakdown in its record
    assert by_task["numbers_en_de"]["headline"] == []  # NaN is no score (and no valid JSON)
    assert by_task["numbers_en_de"]["token_accuracy"] is None
    assert by_task["grammar_parsing"] is None  # no record of it: not evaluated


def test_without_eval_json_every_task_is_not_evaluated(predictor, tiny_checkpoint):
    """The tiny checkpoint was trained without the evaluation that writes eval.json."""
    assert not (tiny_checkpoint.run_dir / "eval.json").exists()
    with TestClient(create_app(predictor)) as c:
        info = c.get("/api/info").json()
    assert all(t["scores"] is None for t in info["tasks"])
    assert info["scores_file"] is None
    assert info["scores_note"].startswith("not evaluated: no eval.json in")


@pytest.mark.parametrize("content", ["{not json", '{"task": "digits"}', '[{"metrics": {}}]'])
def test_an_unreadable_eval_json_reads_as_not_evaluated(predictor, tmp_path, content):
    run = _run(tmp_path, records=None)
    (run / "eval.json").write_text(content)
    info = _info(predictor, read_scores(run / "checkpoints" / "step-0000004"))
    assert all(t["scores"] is None for t in info["tasks"])
    assert "cannot be read" in info["scores_note"]


def test_an_earlier_checkpoint_is_told_the_scores_are_of_the_final_model(tmp_path):
    run = _run(tmp_path, steps=(2, 4))
    earlier = read_scores(run / "checkpoints" / "step-0000002")
    assert earlier.records and "step-0000004" in earlier.note and "step-0000002" in earlier.note
    assert read_scores(run / "checkpoints" / "step-0000004").note is None


def test_the_run_of_a_checkpoint(tmp_path):
    assert run_dir_of(tmp_path / "run" / "checkpoints" / "step-0000004") == tmp_path / "run"
    assert run_dir_of(tmp_path / "exported") == tmp_path / "exported"  # a checkpoint outside a run
    assert read_scores(None).note.startswith("not evaluated")


def test_the_schema_describes_the_scores(predictor):
    with TestClient(create_app(predictor)) as c:
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
    assert "scores" in schemas["TaskOut"]["properties"]
    assert {"value", "blind", "lower_is_better"} <= set(schemas["MetricOut"]["properties"])
    assert {"scores_file", "scores_note", "blind_control"} <= set(schemas["InfoOut"]["properties"])
