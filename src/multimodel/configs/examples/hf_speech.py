"""A Hugging Face speech dataset saved to disk (LibriSpeech), beside the built-in espeak numbers speech.

Data:      data/librispeech_asr: fetched once, on a machine with a network (nothing downloads at run time):
               python -c "import datasets; datasets.load_dataset('openslr/librispeech_asr', 'clean').save_to_disk('data/librispeech_asr')"
           A DatasetDict (splits train.100, train.360, validation, test) with columns audio
           (Audio, 16 kHz) and text. Audio is decoded with soundfile, not datasets' decoders, so
           torchcodec is not needed. Needs pip install 'multimodel[hf]'.
Command:   multimodel train --config examples/hf_speech --run-dir runs/hf_librispeech
Run time:  training stops at train.time_budget_minutes (11 min) or 4,000 steps, after the data is read;
           not measured on the real corpus.
           Audio headers are read once at start for length buckets; utterances reach 35 s.
Expected:  not measured on the real corpus: the tests run this config only on tiny fixture data
           in the same layout (tests/tasks/test_spec.py).
"""

from multimodel.config import Config, DataConfig, TaskSpec, TrainConfig
from multimodel.configs.demo import CONFIG as DEMO

CONFIG = Config(
    model=DEMO.model,
    data=DataConfig(
        tasks=("hf_librispeech", "speech_numbers"),
        declared_tasks=(
            TaskSpec(
                name="hf_librispeech",
                reader="hf_dataset",
                paths={"train": "librispeech_asr", "test": "librispeech_asr"},
                splits={"train": "train.100", "test": "validation"},
                columns={"input": "audio", "target": "text"},  # transcripts are lower-cased
                input_modality="audio",
                target_modality="text",
                task_token="To-English",
            ),
        ),
        vocab_size=2000,
        task_sizes={"hf_librispeech": 0},
        batch_size=8,
    ),
    train=TrainConfig(steps=4000, time_budget_minutes=11.0, learning_rate=2e-3, warmup_steps=300, threads=2),
)
