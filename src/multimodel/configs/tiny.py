"""Tiny preset for tests and smoke runs: every part of the architecture, at toy sizes.

Command:   multimodel train --config tiny --run-dir runs/tiny
Run time:  seconds per hundred steps on one CPU core; the test suite builds it constantly.
Expected:  nothing meaningful — losses fall, outputs are noise. Use the demo preset to learn.
"""

from multimodel.config import Config, DataConfig, ModelConfig, MoEConfig, TrainConfig

CONFIG = Config(
    model=ModelConfig(
        hidden_size=32,
        num_heads=2,
        dropout=0.1,
        encoder_blocks=2,
        mixer_blocks=1,
        decoder_blocks=2,
        conv_kernel_sizes=(3, 3, 5, 5),
        conv_dilations=(1, 1, 1, 2),
        attention_kernel_size=3,
        moe=MoEConfig(num_experts=4, top_k=2, expert_hidden_size=64),
        image_entry_filters=(16, 32),
        audio_mels=80,
        audio_time_strides=2,
        max_target_length=64,
    ),
    data=DataConfig(vocab_size=100, train_size=64, eval_size=16, batch_size=8),
    train=TrainConfig(steps=20, warmup_steps=5, log_every=5, checkpoint_every=10),
)
