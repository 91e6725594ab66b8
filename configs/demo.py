"""The main job: all eight built-in tasks, trained jointly on a 2-core CPU.

Command:   make demo   (= multimodel train --config configs/demo.py --run-dir runs/demo)
Run time:  about 15 minutes on 2 CPU cores (data generation included; cached afterwards).
Expected:  see docs/results.md for the per-task table this preset produced.
"""

from multimodel.config import Config, DataConfig, ModelConfig, MoEConfig, TrainConfig

CONFIG = Config(
    model=ModelConfig(
        hidden_size=128,
        num_heads=4,
        dropout=0.1,
        encoder_blocks=4,
        mixer_blocks=1,
        decoder_blocks=2,
        conv_kernel_sizes=(3, 3, 7, 7),
        conv_dilations=(1, 1, 1, 4),
        moe=MoEConfig(num_experts=16, top_k=2, expert_hidden_size=256),
        image_entry_filters=(32, 64),
        audio_mels=80,
        audio_time_strides=2,
    ),
    data=DataConfig(
        vocab_size=600,
        train_size=4000,
        eval_size=200,
        task_sizes={"grammar_parsing": 2000, "speech_numbers": 2000},
        batch_size=32,
    ),
    train=TrainConfig(
        steps=3000,
        learning_rate=2e-3,
        warmup_steps=300,
        mixing="temperature",
        temperature=2.0,
        log_every=50,
        checkpoint_every=500,
        threads=2,
    ),
)
