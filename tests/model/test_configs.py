"""Every shipped preset (src/multimodel/configs/) builds; small ones train a step, big ones are
counted on 'meta'."""

import pytest
import torch

from multimodel.config import PRESETS_DIR, load_config, preset_names
from multimodel.modalities import EXAMPLE_SPECS
from multimodel.model.multimodel import MultiModel

PRESETS = [PRESETS_DIR / f"{name}.py" for name in sorted(preset_names())]
SPECS = list(EXAMPLE_SPECS.values())
RUNNABLE = 20_000_000  # parameters; above this a preset is only built on the meta device


def count_parameters(cfg) -> int:
    with torch.device("meta"):  # no memory allocated, so the paper's size is fine
        model = MultiModel(cfg.model, cfg.data.vocab_size, SPECS)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_preset_builds_and_trains_a_step(preset):
    cfg = load_config(preset)
    if count_parameters(cfg) > RUNNABLE:
        pytest.skip(f"{preset.stem} is too big to run here (see test_paper_preset_size)")
    torch.manual_seed(0)
    model = MultiModel(cfg.model, cfg.data.vocab_size, SPECS).train()
    g = torch.Generator().manual_seed(0)
    total = 0.0
    for input_spec, target_spec in [("text", "text"), ("audio", "text"), ("image", "class_label:10")]:
        inputs, input_mask = model.modality(input_spec).example_inputs(2, 9, g)
        targets, target_mask = model.modality(target_spec).example_targets(2, 4, g)
        out = model(
            inputs, input_mask, targets, target_mask,
            input_modality=input_spec, target_modality=target_spec, task_token=cfg.model.task_tokens[0],
        )
        assert torch.isfinite(out.loss.loss) and torch.isfinite(out.aux_loss)
        total = total + out.loss.loss + out.aux_loss
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_paper_preset_size():
    cfg = load_config("paper")
    assert cfg.model.hidden_size == 1536 and cfg.model.moe.num_experts == 240 and cfg.model.moe.top_k == 4
    n = count_parameters(cfg)
    assert 2.4e9 < n < 2.8e9, n  # 240 experts × 2 MoE layers × (1536·1536·2) ≈ 2.26 B of it
