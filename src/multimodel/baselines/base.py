"""What every single-task baseline shares: its settings and what its forward pass returns.

A baseline answers MultiModel's calls (``model(inputs, input_mask, targets, target_mask,
**task.model_kwargs)`` returning ``.logits`` and ``.loss``; ``generate(...)`` returning token
ids without EOS; ``config.max_target_length``), so :func:`multimodel.evaluation.evaluate.evaluate_task`
scores a baseline with exactly the code, batches and metric functions that score MultiModel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from multimodel.modalities.base import LossOutput


@dataclass(kw_only=True)
class BaselineConfig:
    """Sizes and training settings of the single-task baselines (paper Table 1's comparison).

    The experiment fills the fields marked "from the run" from the MultiModel run it compares
    against, so both sides share vocabulary, dropout, label smoothing and target length.
    """

    hidden_size: int = 128
    """Width d_model of the Transformer baselines and of the caption CNN's output (from the run:
    its ``model.hidden_size``)."""
    num_heads: int = 4
    """Attention heads of every Transformer layer; must divide ``hidden_size``."""
    encoder_layers: int = 2
    """Transformer encoder layers over text and speech sources (the caption CNN has none)."""
    decoder_layers: int = 2
    """Transformer decoder layers (causal self-attention + attention to the source)."""
    feed_forward_size: int = 0
    """Hidden width of each Transformer layer's feed-forward net; 0 = 4 × ``hidden_size``."""
    dropout: float = 0.1
    """Dropout in the Transformer layers and on embeddings (from the run: ``model.dropout``)."""
    label_smoothing: float = 0.1
    """Label smoothing of the cross-entropy (from the run: ``model.label_smoothing``)."""
    max_target_length: int = 256
    """Longest target decoded (from the run: ``model.max_target_length``)."""
    classifier_channels: tuple[int, int] = (32, 64)
    """Filters of the image classifier's two 3×3 convolutions (then 2×2 max-pool)."""
    classifier_hidden_size: int = 128
    """Width of the image classifier's fully connected hidden layer."""
    classifier_dropout: float = 0.25
    """Dropout after the classifier's max-pool and after its hidden layer."""
    image_channels: tuple[int, ...] = (32, 64)
    """Filters of the caption encoder's stride-2 3×3 convolutions, before a last stride-2
    convolution to ``hidden_size``: a 64×64 image becomes an 8×8 grid of 64 positions."""
    audio_time_strides: int = 2
    """Stride-2 convolutions over time in front of the speech encoder (each halves the frames)."""
    audio_sample_rate: int = 16000
    """Sample rate of raw waveforms, turned into log-mel frames first (from the run)."""
    audio_mels: int = 80
    """Mel bands of the speech features (from the run: ``model.audio_mels``)."""
    audio_normalize: bool = False
    """Normalise each utterance's features per mel band first, as the run's audio net does
    (from the run: ``model.audio_normalize``; layers/utterance_norm.py)."""
    learning_rate: float = 1e-3
    """Adam's learning rate after warm-up (kept constant afterwards, until any cool-down)."""
    warmup_steps: int = 100
    """Linear warm-up steps, capped at a tenth of the training steps (at least 1)."""
    cooldown_fraction: float = 0.0
    """Over the last fraction of the steps, lower the learning rate linearly to zero (from the
    run: ``train.cooldown_fraction``, so both sides end their training the same way)."""
    adam_betas: tuple[float, float] = (0.9, 0.98)
    """Adam's betas."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this."""
    normalize_gradients: bool = False
    """Rescale every step's gradient to global norm 1 instead of clipping it (from the run:
    ``train.normalize_gradients``, so both sides take the same kind of update)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"baseline hidden_size {self.hidden_size} is not divisible by num_heads"
                             f" {self.num_heads}; give --hidden-size or --num-heads that fit")


@dataclass
class BaselineOutput:
    """The forward pass of a baseline, shaped like MultiModel's (``logits``, ``loss``).

    Args:
        logits: (B, T, V) for text targets, (B, C) for class labels.
        loss: label-smoothed loss and the sums behind per-token accuracy and log-perplexity.
    """

    logits: torch.Tensor
    loss: LossOutput
