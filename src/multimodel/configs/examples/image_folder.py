"""Your own images in ImageNet-style class folders, trained beside Fashion-MNIST.

Data:      data/my_images/train/<class>/<image>.{jpg,png,...} and data/my_images/val/<class>/...
           (the ILSVRC-2012 train folder has this layout; torchvision's ImageFolder too). Class
           index = position of the folder name in sorted order; the class names are read from
           the train folder (or give labels=(...) to fix them).
Command:   multimodel train --config examples/image_folder --run-dir runs/my_images
Run time:  training stops at train.time_budget_minutes (11 min) or 4,000 steps, after the data is read;
           not measured on the real corpus.
           Images are decoded when a batch needs them (memory stays flat on large folders).
Expected:  not measured on the real corpus: the tests run this config only on tiny fixture data
           in the same layout (tests/tasks/test_spec.py).
"""

from multimodel.config import Config, DataConfig, TaskSpec, TrainConfig
from multimodel.configs.demo import CONFIG as DEMO

CONFIG = Config(
    model=DEMO.model,
    data=DataConfig(
        tasks=("my_images", "fashion_mnist"),
        declared_tasks=(
            TaskSpec(
                name="my_images",
                reader="image_folder",  # target class_label:N, N = number of class folders
                paths={"train": "my_images/train", "test": "my_images/val"},
                image_size=(64, 64),  # resized (shorter side) and centre-cropped, RGB
            ),
        ),
        vocab_size=600,
        task_sizes={"my_images": 0, "fashion_mnist": 60000},
    ),
    train=TrainConfig(steps=4000, time_budget_minutes=11.0, learning_rate=2e-3, warmup_steps=300, threads=2),
)
