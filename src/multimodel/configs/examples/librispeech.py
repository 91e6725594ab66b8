"""LibriSpeech as a declared speech-recognition task, beside the built-in espeak numbers speech.

Data:      data/LibriSpeech/train-clean-100 and data/LibriSpeech/dev-clean, extracted from
           openslr.org/12 (<speaker>/<chapter>/*.flac with a *.trans.txt per chapter, 16 kHz).
           Each path is one subset folder.
Command:   multimodel train --config examples/librispeech --run-dir runs/my_librispeech
Run time:  training stops at train.time_budget_minutes (11 min) or 4,000 steps, after the data is read;
           not measured on the real corpus.
           Audio is decoded when a batch needs it (file headers are read at start for length
           buckets); LibriSpeech utterances reach 35 s.
Expected:  not measured on the real corpus: the tests run this config only on tiny fixture data
           in the same layout (tests/tasks/test_spec.py).
"""

from multimodel.config import Config, DataConfig, TaskSpec, TrainConfig
from multimodel.configs.demo import CONFIG as DEMO

CONFIG = Config(
    model=DEMO.model,
    data=DataConfig(
        tasks=("my_librispeech", "speech_numbers"),
        declared_tasks=(
            TaskSpec(
                name="my_librispeech",
                reader="librispeech",  # task token To-English and metric wer by default
                paths={"train": "LibriSpeech/train-clean-100", "test": "LibriSpeech/dev-clean"},
            ),
        ),
        vocab_size=2000,
        task_sizes={"my_librispeech": 0},
        batch_size=8,
    ),
    train=TrainConfig(steps=4000, time_budget_minutes=11.0, learning_rate=2e-3, warmup_steps=300, threads=2),
)
