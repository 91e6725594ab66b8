"""Your own recordings listed in a JSONL manifest, trained beside the built-in espeak numbers speech.

Data:      data/my_speech/{train,test}.jsonl, one {"path": "wav/0001.wav", "transcript": "..."}
           object a line (audio paths relative to the manifest; other keys are kept as meta);
           audio at 16 kHz (model.audio_sample_rate), any format soundfile reads (WAV, FLAC, OGG).
           The columns map the manifest's keys to input and target (default "audio" and "text").
Command:   multimodel train --config examples/audio_manifest --run-dir runs/my_speech
Run time:  training stops at train.time_budget_minutes (11 min) or 4,000 steps, after the data is read;
           not measured on the real corpus.
           Audio is decoded when a batch needs it.
Expected:  not measured on the real corpus: the tests run this config only on tiny fixture data
           in the same layout (tests/tasks/test_spec.py).
"""

from multimodel.config import Config, DataConfig, TaskSpec, TrainConfig
from multimodel.configs.demo import CONFIG as DEMO

CONFIG = Config(
    model=DEMO.model,
    data=DataConfig(
        tasks=("my_speech", "speech_numbers"),
        declared_tasks=(
            TaskSpec(
                name="my_speech",
                reader="audio_manifest",  # task token To-English and metric wer by default
                paths={"train": "my_speech/train.jsonl", "test": "my_speech/test.jsonl"},
                columns={"input": "path", "target": "transcript"},
            ),
        ),
        vocab_size=1000,
        task_sizes={"my_speech": 0},
    ),
    train=TrainConfig(steps=4000, time_budget_minutes=11.0, learning_rate=2e-3, warmup_steps=300, threads=2),
)
