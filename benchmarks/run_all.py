"""Run every benchmark and write their figures into docs/benchmarks.md (``make bench``).

Each benchmark runs in its own process (``python benchmarks/<name>.py <args>``), one after the
other, and prints its own tables with its command line. This script puts the machine
description and those outputs, verbatim, between the markers ``<!-- run_all:begin -->`` and
``<!-- run_all:end -->`` at the end of docs/benchmarks.md; the hand-written sections above the
markers (what each benchmark measures, its figures of record and their limits) are left as they are.

    python benchmarks/run_all.py                       # all benchmarks, full size (~30 minutes)
    python benchmarks/run_all.py --only decode pipeline   # replaces just their sections
    python benchmarks/run_all.py --quick --output /tmp/bench.md   # smoke test: --quick runs
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"

#: name -> (script, argument lists: one run each). Order = order in the report.
BENCHMARKS: dict[str, tuple[str, list[list[str]]]] = {
    "train_step": ("train_step.py", [[]]),
    "pipeline": ("pipeline.py", [[]]),
    # Batch 64: the batch the trainer's evaluation decodes with (evaluation/evaluate.py, evaluate_all),
    # timed greedily (the evaluation's beam of 4 decodes 4 rows per example); batch 1 with beam 4:
    # what `multimodel predict` and the web page run per input.
    "decode": ("decode.py", [["--batch", "4"], ["--batch", "1"], ["--hidden", "256", "--batch", "4"],
                             ["--batch", "64"], ["--batch", "1", "--beam", "4"]]),
    "moe": ("moe.py", [[]]),
}


#: The environment variables that change the figures (allocator, OpenMP): docs/benchmarks.md,
#: "Running the benchmarks on this machine".
TUNING_ENV = ("THP_MEM_ALLOC_ENABLE", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
              "OMP_WAIT_POLICY", "OMP_NUM_THREADS")


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    memory = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB memory"
                break
    except OSError:
        pass
    return [
        f"Machine: {cpu}, {os.cpu_count()} logical CPUs{memory}; {platform.system()} {platform.release()}",
        f"Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch threads",
        "Environment (`make bench` sets make demo's, plus huge pages): "
        + (", ".join(f"{name}={os.environ[name]}" for name in TUNING_ENV if name in os.environ) or "none of "
           + ", ".join(TUNING_ENV)),
    ]


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


def run_one(script: str, args: list[str]) -> tuple[str, int, float]:
    """Output (stdout, then stderr if any), exit status and wall time of one benchmark run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, check=False)
    output = done.stdout.rstrip()
    if done.returncode != 0 and done.stderr.strip():
        output += "\n\n" + done.stderr.strip()[-3000:]
    return output, done.returncode, time.perf_counter() - start


def render(output: str) -> str:
    """Markdown outputs (train_step, pipeline) go in as they are; plain text goes in a code block."""
    if output.lstrip().startswith("#"):
        return output
    return "```\n" + output + "\n```"


SECTION = "### `python benchmarks/"


def split_sections(body: str) -> tuple[str, list[tuple[str, str]]]:
    """A report body -> (its header, [(script, section text)]) in order."""
    header, *parts = body.split("\n" + SECTION)
    return header, [(part.split(" ", 1)[0].rstrip("`"), SECTION + part) for part in parts]


def merge(old_body: str, new_body: str) -> str:
    """``old_body`` with every section of a script that ``new_body`` ran replaced by the new ones.

    Used by ``--only``: the benchmarks not re-run keep their figures, and the header says which
    sections are newer than it.
    """
    old_header, old_sections = split_sections(old_body)
    new_header, new_sections = split_sections(new_body)
    rerun = {script for script, _ in new_sections}
    merged, placed = [], False
    for script, text in old_sections:
        if script not in rerun:
            merged.append(text)
        elif not placed:
            merged += [new_text for _, new_text in new_sections]
            placed = True
    if not placed:
        merged += [new_text for _, new_text in new_sections]
    command = next(line for line in new_header.splitlines() if line.startswith("Command:"))
    note = f"Re-run later for {', '.join(sorted(rerun))}: {new_header.splitlines()[0][3:]}; {command}  "
    header = old_header.rstrip("\n") + "\n" + note + "\n"
    return "\n".join([header.rstrip("\n") + "\n", *(t.rstrip("\n") + "\n" for t in merged)])


def write_report(path: Path, body: str, only: bool = False) -> None:
    """Put ``body`` between the markers; with ``only``, merge it into the body already there."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        old_body, tail = rest.split(END, 1)
        if only and SECTION in old_body:
            body = merge(old_body.strip("\n"), body)
        text = head + f"{BEGIN}\n{body.rstrip()}\n{END}\n" + tail.lstrip("\n")
    else:
        text = text.rstrip() + "\n\n" + f"{BEGIN}\n{body.rstrip()}\n{END}\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="run each benchmark with --quick")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--output", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--strict", action="store_true",
                        help="exit non-zero when a benchmark fails or misses its target (default: report it)")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    command = " ".join(["python benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [f"## Latest run of every benchmark ({stamp})", "", f"Command: `{command}`  ",
             *(line + "  " for line in machine()),
             f"Load average at the start: {load()} (the machine may be shared; each table compares"
             " variants measured in the same process, interleaved).", ""]
    failures = []
    for name in names:
        script, runs = BENCHMARKS[name]
        for run_args in runs:
            run_args = [*run_args, "--quick"] if args.quick else run_args
            print(f"running {script} {' '.join(run_args)} ...", file=sys.stderr, flush=True)
            output, status, wall = run_one(script, run_args)
            status_note = "" if status == 0 else f" — **exit status {status}** (failed or missed its target)"
            lines += [f"### `python benchmarks/{script} {' '.join(run_args)}`".rstrip() + "",
                      "", f"Wall time {wall:.0f} s, load average after: {load()}{status_note}.", "",
                      render(output), ""]
            if status != 0:
                failures.append(f"{script} {' '.join(run_args)}")
    write_report(Path(args.output), "\n".join(lines), only=bool(args.only))
    print(f"wrote {args.output}", file=sys.stderr)
    if failures:
        print(f"non-zero exit (failed or missed its target): {', '.join(failures)}", file=sys.stderr)
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
