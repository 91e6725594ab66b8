"""Your own parallel text (English -> Spanish), trained beside the built-in EN -> DE numbers task.

Data:      data/my_parallel/{train,test}.{en,es}(.gz): one sentence a line, line i of the .en
           file translating line i of the .es file; plain text or gzip (e.g. a WMT or Europarl
           pair). A new target language needs a new task token: "To-Spanish" is added to
           model.task_tokens below.
Command:   multimodel train --config examples/parallel_text --run-dir runs/my_parallel
Run time:  training stops at train.time_budget_minutes (11 min) or 4,000 steps, after the data is read;
           not measured on the real corpus.
Expected:  not measured on the real corpus: the tests run this config only on tiny fixture data
           in the same layout (tests/tasks/test_spec.py).
"""

import dataclasses

from multimodel.config import Config, DataConfig, TaskSpec, TrainConfig
from multimodel.configs.demo import CONFIG as DEMO

CONFIG = Config(
    model=dataclasses.replace(DEMO.model, task_tokens=DEMO.model.task_tokens + ("To-Spanish",)),
    data=DataConfig(
        tasks=("my_en_es", "numbers_en_de"),
        declared_tasks=(
            TaskSpec(
                name="my_en_es",
                reader="parallel_text",
                paths={"train": ("my_parallel/train.en.gz", "my_parallel/train.es.gz"),
                       "test": ("my_parallel/test.en", "my_parallel/test.es")},
                task_token="To-Spanish",
            ),
        ),
        vocab_size=2000,
        task_sizes={"my_en_es": 0},  # every pair of the files (0 = all); built-in tasks: train_size
    ),
    train=TrainConfig(steps=4000, time_budget_minutes=11.0, learning_rate=2e-3, warmup_steps=300, threads=2),
)
