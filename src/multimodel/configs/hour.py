"""The demo's model and tasks for one hour on a 2-core CPU, with more data for the tasks that run out.

Command:   multimodel train --config hour --run-dir runs/hour --overwrite
           (make demo ARGS="--config hour" runs it into runs/demo with make demo's environment)
Run time:  about 2-3 min to generate the larger speech, caption and parsing sets the first time
           (cached afterwards), 60 minutes of training (train.time_budget_minutes), then about a
           minute of evaluation with the blind control.
Expected:  ~13,600-18,800 steps with make demo's environment (~1,550-2,300 per task, speech
           ~2,400-3,500; ~14,500 without it); decoded with the default beam of 4, with the
           constant learning rate after the warm-up that the demo preset sets (two seeds):
           Fashion-MNIST ~89 %, caption item F1 ~84-86 (BLEU ~95), speech WER ~24-28 %, parse
           F1 ~92, translation BLEU ~100, each far from its blind control; docs/results.md
           ("One-hour run") has the tables, learning curves and single-task baselines at
           matched steps (ahead on speech by 5-7.5 WER, on parsing by 5.5-7 F1 and on captions
           by 4-6 item F1, 1.3-1.5 points behind on Fashion-MNIST; with the earlier noam
           schedule speech ~32 %, parse F1 ~87-88).

Everything is the demo preset's (``demo.py``: among the rest, the learning rate's cool-down over
the last fifth of the budget) except the time budget, the evaluation interval, the task weights
(every task 1, speech 1.5), clipped gradients (``train.normalize_gradients=false``) and batch 32
for every task (no ``data.task_batch_sizes``): the settings its runs were measured with (an hour
with the demo's per-task batches, captions at 64 too, ran 10,886 steps instead of ~18,800 and
ended behind on speech and parsing, parse F1 74 against its baseline's 82; docs/results.md,
"One-hour run"); and the training-set sizes of three tasks. An hour of the demo preset showed
speech and parsing data-starved: with their 2,000 training examples each, training per-token
accuracy reached 99-100 % by step ~7,000 while held-out speech WER stayed at 70-75 % and parse
F1 crept up, and caption item F1 was still climbing. So this preset generates more of the same synthetic data:
speech 16,000 utterances (the same training voices, speeds and pitches; test voices and speeds
stay held out), parsing 10,000 sentences, captions 16,000 canvases. Parsing is then no longer
the smallest text task (each translation direction has 4,000 pairs, 16,000 together), which
weakens what this preset can say about the paper's small-data claim. Test sets are unchanged and
held out exactly as in the demo.
"""

import dataclasses

from multimodel.configs.demo import CONFIG as DEMO

CONFIG = dataclasses.replace(
    DEMO,
    data=dataclasses.replace(
        DEMO.data,
        task_sizes={
            **DEMO.data.task_sizes,
            "speech_numbers": 16000,
            "grammar_parsing": 10000,
            "fashion_captions": 16000,
        },
        task_batch_sizes={},  # 32 examples for every task, as in its runs (the demo preset has since changed)
    ),
    train=dataclasses.replace(
        DEMO.train,
        # The weights the one-hour runs in docs/results.md were measured with: every task 1,
        # speech 1.5 (the demo preset has since moved steps from translation to the slow tasks).
        task_weights={name: 1.5 if name == "speech_numbers" else 1.0 for name in DEMO.train.task_weights},
        # ... and clipped gradients: the demo preset rescales them to norm 1, but over an hour
        # the translations converge and, rescaled, their empty updates slowed speech (WER 56.7
        # against 41.5; docs/results.md, "One-hour run").
        normalize_gradients=False,
        steps=100_000,  # the time budget stops it
        time_budget_minutes=60.0,
        eval_every=2000,
        checkpoint_every=1000,
    ),
)
