"""WMT'14 English -> German from the hub's Parquet files, beside the built-in EN -> DE numbers task.

Data:      data/wmt14/de-en/{train,validation,test}-*.parquet: fetched once, on a machine with a network:
               huggingface-cli download wmt/wmt14 --repo-type dataset --include "de-en/*" --local-dir data/wmt14
           Each row holds the pair in one struct column, translation = {"de": ..., "en": ...};
           "translation.en" names a field of it. Parquet (and JSON/CSV) files are converted once
           into Arrow files under data/hf_cache and memory-mapped from there. Needs pip install
           'multimodel[hf]'.
Command:   multimodel train --config examples/hf_parquet_text --run-dir runs/wmt14
Run time:  training stops at train.time_budget_minutes (11 min) or 4,000 steps, after the data is read;
           not measured on the real corpus.
           The first run converts the Parquet files to Arrow once (4.5M pairs).
Expected:  not measured on the real corpus: the tests run this config only on tiny fixture data
           in the same layout (tests/tasks/test_spec.py).
"""

from multimodel.config import Config, DataConfig, TaskSpec, TrainConfig
from multimodel.configs.demo import CONFIG as DEMO

CONFIG = Config(
    model=DEMO.model,
    data=DataConfig(
        tasks=("wmt14_en_de", "numbers_en_de"),
        declared_tasks=(
            TaskSpec(
                name="wmt14_en_de",
                reader="hf_dataset",
                paths={"train": "wmt14/de-en/train-*.parquet", "test": "wmt14/de-en/test-*.parquet"},
                columns={"input": "translation.en", "target": "translation.de"},
                input_modality="text",
                target_modality="text",
                task_token="To-German",
            ),
        ),
        vocab_size=8000,
        task_sizes={"wmt14_en_de": 200000},  # the first 200k pairs; 0 = all 4.5M
    ),
    train=TrainConfig(steps=4000, time_budget_minutes=11.0, learning_rate=2e-3, warmup_steps=300, threads=2),
)
