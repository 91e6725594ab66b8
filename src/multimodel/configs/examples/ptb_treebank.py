"""Penn Treebank trees (.mrg) as a declared parsing task, beside the built-in grammar parsing.

Data:      data/treebank_sample/treebank.zip: NLTK's 10% sample of the WSJ treebank
           (nltk_data's packages/corpora/treebank.zip; or the LDC folder parsed/mrg/wsj/ with
           splits train/valid/test by section). Train = wsj_0001-0169, test = wsj_0170-0199;
           two different paths (your own split, by folder) read every tree of each.
Command:   multimodel train --config examples/ptb_treebank --run-dir runs/my_ptb
Run time:  training stops at train.time_budget_minutes (11 min) or 4,000 steps, after the data is read;
           not measured on the real corpus.
Expected:  not measured on the real corpus: the tests run this config only on tiny fixture data
           in the same layout (tests/tasks/test_spec.py).
"""

from multimodel.config import Config, DataConfig, TaskSpec, TrainConfig
from multimodel.configs.demo import CONFIG as DEMO

CONFIG = Config(
    model=DEMO.model,
    data=DataConfig(
        tasks=("my_wsj_parsing", "grammar_parsing"),
        declared_tasks=(
            TaskSpec(
                name="my_wsj_parsing",
                reader="ptb",  # task token To-Parse-Tree and metric bracket_f1 by default
                paths={"train": "treebank_sample/treebank.zip", "test": "treebank_sample/treebank.zip"},
            ),
        ),
        vocab_size=1000,
        task_sizes={"my_wsj_parsing": 0},
    ),
    train=TrainConfig(steps=4000, time_budget_minutes=11.0, learning_rate=2e-3, warmup_steps=300, threads=2),
)
