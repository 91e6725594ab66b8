"""Greedy and beam search: the incremental state must reproduce full recomputation."""

import math

import pytest
import torch

from multimodel.model.decoding import EOS_ID, IncrementalScorer, RecomputeScorer, length_penalty_factor

from .conftest import make_model


BODIES = {"paper": {}, "residual": {"self_attention_residual": True}, "no_self_attention": {"self_attention": False}}


@pytest.fixture(scope="module", params=list(BODIES))
def setup(request):
    """Each attention-block variant: incremental decoding must equal recomputation for all."""
    model = make_model(**BODIES[request.param]).eval()
    g = torch.Generator().manual_seed(1)
    inputs, mask = model.modality("audio").example_inputs(3, 9, g)
    return model, inputs, mask


def gen(model, inputs, mask, **kw):
    return model.generate(
        inputs, mask, input_modality="audio", target_modality="text", task_token="To-English", **kw
    )


@torch.no_grad()
def test_incremental_logits_equal_full_recomputation(setup):
    model, inputs, mask = setup
    encoded = model.encode(inputs, mask, input_modality="audio")
    args = (model, encoded, "text", "To-English")
    fast, slow = IncrementalScorer(*args), RecomputeScorer(*args)
    tokens = torch.zeros(3, 0, dtype=torch.long)
    for _ in range(12):
        a, b = fast(tokens), slow(tokens)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        tokens = torch.cat([tokens, torch.randint(2, 100, (3, 1))], dim=1)  # any prefix, not only argmax


@pytest.mark.parametrize("beam_size", [1, 3])
def test_generate_incremental_equals_recompute(setup, beam_size):
    model, inputs, mask = setup
    fast = gen(model, inputs, mask, max_length=10, beam_size=beam_size)
    slow = gen(model, inputs, mask, max_length=10, beam_size=beam_size, incremental=False)
    assert fast == slow
    assert len(fast) == 3 and all(EOS_ID not in row and len(row) <= 10 for row in fast)


def test_beam_state_reorder_follows_the_beams(setup):
    model, inputs, mask = setup
    encoded = model.encode(inputs, mask, input_modality="audio").repeat_interleave(2)
    args = (model, encoded, "text", "To-English")
    fast, slow = IncrementalScorer(*args), RecomputeScorer(*args)
    tokens = torch.randint(2, 100, (6, 0))
    with torch.no_grad():
        for step in range(5):
            fast(tokens)
            order = torch.tensor([1, 0, 3, 3, 4, 5]) if step % 2 else torch.tensor([0, 0, 2, 3, 5, 5])
            fast.reorder(order)
            tokens = torch.cat([tokens.index_select(0, order), torch.randint(2, 100, (6, 1))], dim=1)
        torch.testing.assert_close(fast(tokens), slow(tokens), atol=1e-5, rtol=1e-5)


def test_generation_stops_at_eos_and_strips_it():
    model = make_model().eval()
    text = model.modality("text")
    inputs, mask = text.example_inputs(2, 5)
    kw = dict(input_modality="text", target_modality="text", task_token="To-German", max_length=4)
    # Constant logits favouring id 7: never stops, returns max_length tokens.
    text.output = torch.nn.Linear(text.output.in_features, 100)
    with torch.no_grad():
        text.output.weight.zero_()
        text.output.bias.copy_(torch.zeros(100).index_fill(0, torch.tensor([7]), 1.0))
    assert model.generate(inputs, mask, **kw) == [[7] * 4] * 2
    # Constant logits favouring EOS: stops at once, and EOS is not returned.
    with torch.no_grad():
        text.output.bias.copy_(torch.zeros(100).index_fill(0, torch.tensor([EOS_ID]), 1.0))
    assert model.generate(inputs, mask, **kw) == [[], []]
    assert model.generate(inputs, mask, beam_size=2, **kw) == [[], []]


def test_length_penalty():
    assert length_penalty_factor(1, 0.6) == 1.0
    assert length_penalty_factor(7, 0.0) == 1.0
    assert length_penalty_factor(7, 1.0) == 2.0


class _TableScorer:
    """A hand-made model: next-token log-probabilities looked up by the prefix, over the ids
    PAD, EOS, 3 and 4 (unlisted prefixes all but certainly continue with 4 and never end)."""

    def __init__(self, table: dict[tuple[int, ...], dict[int, float]]) -> None:
        self.table = table

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        rows = []
        for prefix in tokens.tolist():
            probs = self.table.get(tuple(prefix), {4: 1.0 - 1e-12, EOS_ID: 1e-12})
            rows.append([probs.get(i, 0.0) for i in range(5)])
        return torch.tensor(rows, dtype=torch.float64).clamp(min=1e-30).log()  # (N, V): log p as logits

    def reorder(self, index: torch.Tensor) -> None:
        pass  # the table reads the whole prefix


@pytest.mark.parametrize("alpha", [0.6, 1.0, 2.0])
def test_beam_search_ranks_finished_hypotheses_by_length_penalised_score(alpha):
    """An EOS at once (length 1, log p = log 0.3) against "3 3 EOS" (length 3, log p = log q):
    the search returns the longer one exactly when log q / lp(3) > log 0.3 / lp(1), lp counting
    the EOS. Swept across the boundary, so a penalty off by one length changes some answer."""
    from multimodel.model.decoding import search_beams

    lp1, lp3 = length_penalty_factor(1, alpha), length_penalty_factor(3, alpha)
    flips = 0
    for q in torch.linspace(0.05, 0.65, 61).tolist():
        table = {(): {EOS_ID: 0.3, 3: q, 4: 0.7 - q}, (3,): {3: 1.0}, (3, 3): {EOS_ID: 1.0}}
        best = search_beams(_TableScorer(table), 1, beam_size=2, max_length=6, length_penalty=alpha,
                            device=torch.device("cpu"))
        longer = math.log(q) / lp3 > math.log(0.3) / lp1
        assert best == ([[3, 3]] if longer else [[]]), (q, best)
        flips += longer
    assert 0 < flips < 61  # the sweep crosses the boundary


def test_generate_rejects_bad_arguments(setup):
    model, inputs, mask = setup
    with pytest.raises(ValueError, match="max_length"):
        gen(model, inputs, mask, max_length=0)
    with pytest.raises(ValueError, match="beam_size"):
        gen(model, inputs, mask, max_length=3, beam_size=0)
    with pytest.raises(ValueError, match="unknown task token"):
        model.generate(inputs, mask, input_modality="audio", target_modality="text", task_token="To-Mars", max_length=3)
