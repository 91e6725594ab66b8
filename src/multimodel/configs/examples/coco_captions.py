"""MS-COCO captions as a declared captioning task, beside the built-in Fashion-MNIST captions.

Data:      data/coco/annotations/captions_{train,val}2017.json and data/coco/{train,val}2017/*.jpg,
           extracted from cocodataset.org's annotations_trainval2017.zip, train2017.zip and
           val2017.zip (2014 files are found too). Test = COCO's val split.
Command:   multimodel train --config examples/coco_captions --run-dir runs/my_coco
Run time:  training stops at train.time_budget_minutes (11 min) or 4,000 steps, after the data is read;
           not measured on the real corpus.
           Images are decoded when a batch needs them (memory stays flat on 118k images).
Expected:  not measured on the real corpus: the tests run this config only on tiny fixture data
           in the same layout (tests/tasks/test_spec.py).
"""

from multimodel.config import Config, DataConfig, TaskSpec, TrainConfig
from multimodel.configs.demo import CONFIG as DEMO

CONFIG = Config(
    model=DEMO.model,
    data=DataConfig(
        tasks=("my_coco", "fashion_captions"),
        declared_tasks=(
            TaskSpec(
                name="my_coco",
                reader="coco_captions",  # task token To-English and metric caption_bleu by default
                paths={"train": "coco", "test": "coco"},
                image_size=(64, 64),
                per_caption=True,  # one training example per caption (five per image)
            ),
        ),
        vocab_size=2000,
        task_sizes={"my_coco": 20000},
    ),
    train=TrainConfig(steps=4000, time_budget_minutes=11.0, learning_rate=2e-3, warmup_steps=300, threads=2),
)
