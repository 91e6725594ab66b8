"""A Hugging Face image-classification dataset saved to disk, trained beside Fashion-MNIST.

Data:      data/beans: fetched once, on a machine with a network (nothing downloads at run time):
               python -c "import datasets; datasets.load_dataset('AI-Lab-Makerere/beans').save_to_disk('data/beans')"
           A DatasetDict with splits train/validation/test and columns image (Image) and labels
           (ClassLabel: its names become the task's labels). Needs pip install 'multimodel[hf]'.
Command:   multimodel train --config examples/hf_images --run-dir runs/my_beans
Run time:  training stops at train.time_budget_minutes (11 min) or 4,000 steps, after the data is read;
           not measured on the real corpus.
           Rows are read from the memory-mapped Arrow files and decoded when a batch needs them.
Expected:  not measured on the real corpus: the tests run this config only on tiny fixture data
           in the same layout (tests/tasks/test_spec.py).
"""

from multimodel.config import Config, DataConfig, TaskSpec, TrainConfig
from multimodel.configs.demo import CONFIG as DEMO

CONFIG = Config(
    model=DEMO.model,
    data=DataConfig(
        tasks=("beans", "fashion_mnist"),
        declared_tasks=(
            TaskSpec(
                name="beans",
                reader="hf_dataset",
                paths={"train": "beans", "test": "beans"},  # one save_to_disk folder holding both splits
                splits={"train": "train", "test": "test"},
                columns={"input": "image", "target": "labels"},
                input_modality="image",
                target_modality="class_label",  # N from the ClassLabel's names
                image_size=(64, 64),
            ),
        ),
        vocab_size=600,
        task_sizes={"beans": 0, "fashion_mnist": 60000},
    ),
    train=TrainConfig(steps=4000, time_budget_minutes=11.0, learning_rate=2e-3, warmup_steps=300, threads=2),
)
