"""The paper's sizes (Kaiser et al. 2017): the joint 8-task MultiModel.

Command:   multimodel train --config paper --run-dir runs/paper
Run time:  the paper trained on many GPUs for days; this is for reference and for large
           hardware, not for a laptop (about 2.59 B parameters with text, image, audio and
           class_label:1000 modality nets; 2.26 B of them in the 2 × 240 experts).
Expected:  paper Table 1 (ImageNet top-5 86%, WMT EN→DE BLEU 21.2, EN→FR 30.5) on the real
           corpora; the built-in tasks listed below are only stand-ins.

Sizes: hidden 1536, dropout 0.1, label smoothing 0.1, gradient clip 2.0, Adam β = (0.85, 0.997),
ε = 1e-6 and expert width = hidden size: the code released with the paper (tensor2tensor
3d9c62f2, ``multimodel1_p8``). 240 experts with k = 4 and 8 attention heads: the paper's joint
model (the released code had 120 experts, k = 2, single-head attention). Encoder 6 conv blocks,
mixer 2, decoder 4; the attention block's masked self-attention, the encoder's timing signal,
the downsampling class-label net and the 8-block audio net (paper §2). ~8k shared subwords;
beam 4 with α = 0.6. Not reproduced (docs/architecture.md, Deviations): the released code's
learning rate 0.05 with an exponential warm-up over 3,000 steps then constant, its weight
decay 3.0, orthogonal initialisation and per-task loss multipliers; here Adam at 1e-3 with a
3,000-step linear warm-up, then constant (the released shape, ``train.lr_decay='none'``).
(Expert width 2048 and "noam" warm-up 4000 belong to the later ``multimodel_base``, not to the paper's code.)
"""

from multimodel.config import Config, DataConfig, ModelConfig, MoEConfig, TrainConfig

CONFIG = Config(
    model=ModelConfig(
        hidden_size=1536,
        num_heads=8,
        dropout=0.1,
        encoder_blocks=6,
        mixer_blocks=2,
        decoder_blocks=4,
        conv_kernel_sizes=(3, 3, 15, 15),
        conv_dilations=(1, 1, 1, 8),
        attention_kernel_size=5,
        moe=MoEConfig(num_experts=240, top_k=4, expert_hidden_size=1536, aux_loss_coef=1e-2),
        label_smoothing=0.1,
        image_channels=3,
        image_entry_filters=(32, 64),
        audio_mels=80,
        audio_frequency_patch=1,  # the paper's one-channel spectrogram net ...
        audio_block_filters=(2, 4, 8, 16, 32, 64, 128, 256),  # ... of 8 ConvRes blocks, 2^i filters
        max_target_length=256,
    ),
    data=DataConfig(vocab_size=8192, batch_size=64),
    train=TrainConfig(
        steps=250_000,
        learning_rate=1e-3,
        warmup_steps=3000,
        adam_betas=(0.85, 0.997),
        adam_eps=1e-6,
        grad_clip=2.0,
        beam_size=4,
        length_penalty=0.6,
    ),
)
