"""Incremental decoding vs. full recomputation (MultiModel decoder, model/decoding.py).

Generates the same tokens twice from the same model and input: once with the incremental
state (causal-conv windows + cached memory keys/values, one new position per step) and once by
re-running the teacher-forced decoder over the whole prefix at every step. Reports the median
time of each over several repetitions and their ratio, and checks that both produced
identical tokens (and logits to 1e-5).

With ``--beam K`` both decode by beam search instead (model/decoding.py's ``search_beams``, what
evaluation and ``multimodel predict`` run: K rows per input), EOS masked out so every run
decodes the same number of tokens; their hypotheses must be identical.

    python benchmarks/decode.py            # the demo size (hidden 128), batch 4, 128 tokens, 3 reps
    python benchmarks/decode.py --batch 1 --beam 4   # what `multimodel predict` does per input
    python benchmarks/decode.py --quick    # a few seconds: smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time

import torch

from multimodel.config import ModelConfig, load_config
from multimodel.modalities.text import FIRST_PIECE_ID
from multimodel.config import EOS_ID
from multimodel.model.decoding import IncrementalScorer, RecomputeScorer, search_beams
from multimodel.model.multimodel import MultiModel


def demo_like_config(hidden_size: int, max_length: int) -> ModelConfig:
    """The demo preset's model at width ``hidden_size`` (its experts 2 × as wide, as the demo's)."""
    demo = load_config("demo").model
    return dataclasses.replace(
        demo,
        hidden_size=hidden_size,
        moe=dataclasses.replace(demo.moe, expert_hidden_size=2 * hidden_size),
        max_target_length=max(demo.max_target_length, max_length + 1),
    )


@torch.no_grad()
def greedy_fixed_length(scorer, batch: int, steps: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Greedy decoding for exactly ``steps`` tokens (no EOS stop, so both runs do equal work)."""
    tokens = torch.zeros(batch, 0, dtype=torch.long)
    all_logits = []
    for _ in range(steps):
        logits = scorer(tokens)  # (B, V)
        all_logits.append(logits)
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)  # (B, t + 1)
    return tokens, all_logits


class _NeverEnding:
    """A scorer whose EOS logit is -inf: beam search then runs for exactly ``max_length`` tokens."""

    def __init__(self, scorer):
        self.scorer = scorer

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.scorer(tokens).clone()  # (N, V)
        logits[:, EOS_ID] = float("-inf")
        return logits

    def reorder(self, index: torch.Tensor) -> None:
        self.scorer.reorder(index)


@torch.no_grad()
def beam_fixed_length(scorer, batch: int, beam: int, steps: int) -> tuple[list[list[int]], None]:
    """Beam search of ``beam`` for exactly ``steps`` tokens per hypothesis."""
    hypotheses = search_beams(_NeverEnding(scorer), batch, beam_size=beam, max_length=steps, length_penalty=0.6,
                              device=torch.device("cpu"))
    return hypotheses, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repetition")
    parser.add_argument("--hidden", type=int, default=128, help="model width (demo preset: 128)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    parser.add_argument("--input-length", type=int, default=24)
    parser.add_argument("--vocab", type=int, default=600)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings)")
    parser.add_argument("--min-ratio", type=float, default=5.0, help="fail below this speed-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.hidden, args.tokens, args.reps, args.vocab, args.min_ratio = 32, 12, 1, 100, 0.0
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(previous_threads)  # the smoke test runs in the pytest process


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(0)

    model = MultiModel(demo_like_config(args.hidden, args.tokens), args.vocab, ["text"]).eval()
    inputs = torch.randint(FIRST_PIECE_ID, args.vocab, (args.batch, args.input_length))  # no special ids
    with torch.no_grad():
        encoded = model.encode(inputs, None, input_modality="text")
        if args.beam > 1:
            encoded = encoded.repeat_interleave(args.beam)  # rows b·K + k

    times: dict[str, list[float]] = {"incremental": [], "recompute": []}
    results = {}
    for _ in range(args.reps):
        for name, cls in (("incremental", IncrementalScorer), ("recompute", RecomputeScorer)):
            scorer = cls(model, encoded, "text", "To-English", args.tokens)
            start = time.perf_counter()
            if args.beam > 1:
                results[name] = beam_fixed_length(scorer, args.batch, args.beam, args.tokens)
            else:
                results[name] = greedy_fixed_length(scorer, args.batch, args.tokens)
            times[name].append(time.perf_counter() - start)

    fast_tokens, fast_logits = results["incremental"]
    slow_tokens, slow_logits = results["recompute"]
    if args.beam > 1:
        assert fast_tokens == slow_tokens, "incremental and recomputed beam search disagree"
        agreement = "hypotheses identical"
    else:
        assert torch.equal(fast_tokens, slow_tokens), "incremental and recomputed decoding disagree"
        max_diff = max(float((a - b).abs().max()) for a, b in zip(fast_logits, slow_logits))
        assert max_diff <= 1e-5, f"logits differ by {max_diff:.2e}"
        agreement = f"tokens identical, max |Δlogit| = {max_diff:.1e}"

    fast, slow = statistics.median(times["incremental"]), statistics.median(times["recompute"])
    ratio = slow / fast
    params = sum(p.numel() for p in model.parameters())
    print(
        f"hidden {args.hidden}, {params / 1e6:.1f} M parameters, batch {args.batch},"
        + (f" beam {args.beam} ({args.batch * args.beam} rows)," if args.beam > 1 else "") +
        f" {args.tokens} tokens, input length {args.input_length}, threads {args.threads},"
        f" median of {args.reps}"
    )
    print(f"incremental: {fast:8.3f} s  ({1e3 * fast / args.tokens:6.2f} ms/token)")
    print(f"recompute:   {slow:8.3f} s  ({1e3 * slow / args.tokens:6.2f} ms/token)")
    print(f"speed-up:    {ratio:8.1f}x   {agreement}")
    if ratio < args.min_ratio:
        print(f"FAIL: speed-up {ratio:.1f}x is below {args.min_ratio}x", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
