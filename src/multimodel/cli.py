"""The `multimodel` command: argument parsing only; each command calls one function.

Errors a user can fix (bad config key, unknown task, missing or corrupt file, incompatible
checkpoint: the project's :class:`~multimodel.errors.UserError` classes, and files that are
missing or unreadable) print one line saying what is wrong and what to do, and exit with
status 2; ``--debug`` shows the traceback. Any other exception is a bug and shows its traceback.

``--config`` takes a shipped preset by name (``tiny``, ``demo``, ``paper``), a shipped worked
example of tasks declared over your own data (``examples/image_folder``, ...) or a Python file.
Options and ``KEY=VALUE`` config overrides may come in any order
(``multimodel train train.steps=5 --config tiny model.dropout=0.0 --run-dir runs/x``).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

EXAMPLES = """\
examples:
  multimodel train --config demo --run-dir runs/demo
  multimodel train --config demo --run-dir runs/demo train.steps=5000 model.moe.num_experts=32
  multimodel train --config my_preset.py --run-dir runs/mine
  multimodel train --run-dir runs/demo --resume
  torchrun --nproc-per-node 2 -m multimodel train --config demo --run-dir runs/ddp
  multimodel eval runs/demo --tasks numbers_en_de grammar_parsing --beam-size 1
  multimodel predict runs/demo --text "twenty-one" --to german
  multimodel predict runs/demo --image shoe.png
  multimodel predict runs/demo --audio hello.wav
  multimodel serve runs/demo --port 8000
  multimodel tasks
  multimodel tasks --config examples/image_folder
  multimodel train --config examples/image_folder --run-dir runs/my_images
  multimodel predict runs/my_images --image cat.jpg --task my_images
  multimodel info --config paper
  multimodel experiment joint-vs-single --config demo --seeds 3
  multimodel experiment baselines --run runs/demo
  multimodel analyze-routing runs/demo
  multimodel reproduce data.corpora_dir=../shared/corpora
"""


CHECKPOINT_HELP = "a run directory (its newest checkpoint), a checkpoints/step-* directory or a saved model"


class _IntermixedParser(argparse.ArgumentParser):
    """A command's parser whose options and positionals (KEY=VALUE overrides) may be interleaved.

    Plain argparse takes a ``nargs="*"`` positional in one run, so overrides after an option
    were "unrecognized"; ``parse_known_intermixed_args`` reads the options first, then the
    positionals. A parser with subcommands of its own cannot be intermixed and parses as usual.
    """

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        nested = any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._get_positional_actions())
        if nested or self._intermixing:  # parse_known_intermixed_args calls back here for its two passes
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", required=required,
                   help="a shipped preset (tiny, demo, hour, paper), a worked example of tasks over your own"
                   " data (examples/image_folder, ...) or the path of a Python file defining CONFIG")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides such as train.steps=500 model.moe.top_k=4 (unknown keys are errors)")


def _int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``, else a usage error saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _port(text: str) -> int:
    """A TCP port number for argparse: an integer in 1-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1-65535)") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range: give 1-65535")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multimodel",
        description="MultiModel (Kaiser et al. 2017): one network trained jointly on many tasks and modalities.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_IntermixedParser)

    p = sub.add_parser("train", help="train one model jointly on the configured tasks, then evaluate it",
                       description="Train jointly on data.tasks, write checkpoints/logs to --run-dir, then"
                       " evaluate every task and print a per-task table.",
                       epilog="example: multimodel train --config demo --run-dir runs/demo train.steps=500",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_config_args(p, required=False)
    p.add_argument("--run-dir", required=True, type=Path, help="directory for checkpoints, logs and results")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue from the newest intact checkpoint in --run-dir (a damaged newer one is"
                       " set aside as damaged-step-*)")
    again.add_argument("--resume-from", type=Path, default=None, metavar="CHECKPOINT",
                       help="continue from this checkpoints/step-* folder of --run-dir; its newer checkpoints"
                       " are set aside as superseded-step-*")
    again.add_argument("--overwrite", action="store_true",
                       help="start over in a --run-dir that holds an earlier run: delete its checkpoints,"
                       " logs and results first (without --resume or --overwrite such a directory is refused)")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    p.add_argument("--no-blind", action="store_true",
                   help="skip the blind control of the evaluation after training (each task scored"
                   " again on blank images, silence, text of unknown words: the blind_<metric> numbers)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")

    p = sub.add_parser("eval", help="evaluate a checkpoint on its tasks' held-out data",
                       epilog="example: multimodel eval runs/demo --beam-size 1  (greedy)")
    p.add_argument("checkpoint", type=Path, help=CHECKPOINT_HELP)
    p.add_argument("--tasks", nargs="+", help="subset of the checkpoint's tasks (default: all)")
    p.add_argument("--beam-size", type=_int_at_least(1), default=None,
                   help="beam size (default: the run's saved train.beam_size: 4 for runs since 2026-12-02; 1 = greedy)")
    p.add_argument("--length-penalty", type=float, default=None, metavar="ALPHA",
                   help="beam search's GNMT length penalty α >= 0 (default: the run's saved"
                   " train.length_penalty, 0.6 as in the paper's code; larger favours longer outputs)")
    p.add_argument("--data-dir", default=None, help="where the task data lives (default: the config's)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--no-blind", action="store_true",
                   help="skip the blind control (each task scored again on inputs with their content"
                   " removed, reported as blind_<metric>); halves the time")

    p = sub.add_parser("predict", help="run a checkpoint on one image, audio file or sentence",
                       epilog="examples:\n  multimodel predict runs/demo --image shoe.png\n"
                       "  multimodel predict runs/demo --audio hello.wav\n"
                       "  multimodel predict runs/demo --text 'the cat saw a dog' --to parse-tree\n"
                       "  multimodel predict runs/mine --image cat.jpg --task my_images",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help=CHECKPOINT_HELP)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--image", type=Path, help="an image file (PNG, JPEG, ...): class and caption")
    group.add_argument("--audio", type=Path, help="a WAV/FLAC file: transcript")
    group.add_argument("--text", help="a sentence: translation or parse tree (see --to)")
    p.add_argument("--to", default="german",
                   help="what to produce from --text: english, german, french, parse-tree, or the language"
                   " of another task token of the checkpoint (spanish for To-Spanish) (default: german)")
    p.add_argument("--task", default=None,
                   help="answer with this task of the checkpoint only (a task declared in its config, say);"
                   " --text then ignores --to")
    p.add_argument("--beam-size", type=_int_at_least(1), default=4, help="beam size (default 4, as in the paper's code)")

    p = sub.add_parser("serve", help="a local web page and JSON API for a checkpoint (image, speech, text)",
                       epilog="example: multimodel serve runs/demo   (then open http://127.0.0.1:8000/;"
                       " API schema at /openapi.json)")
    p.add_argument("checkpoint", type=Path, help=CHECKPOINT_HELP)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; others are warned about)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port, 1-65535 (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=10.0,
                   help="largest image or audio upload in megabytes (default 10)")

    p = sub.add_parser("tasks", help="list the task catalogue and the tasks a config declares (modalities, task"
                       " token) and whether their data is present",
                       epilog="examples:\n  multimodel tasks\n  multimodel tasks --config examples/image_folder"
                       " data.data_dir=/data",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None,
                   help="data directory to check (default: the config's data.data_dir; without --config, data)")
    _add_config_args(p, required=False)

    p = sub.add_parser("info", help="describe the model a config builds (parameter counts per part)",
                       epilog="example: multimodel info --config paper")
    _add_config_args(p)

    p = sub.add_parser("data", help="download real corpora whose licences allow it")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    d = dsub.add_parser("download", help="download and verify a corpus (resumable)")
    d.add_argument("name", nargs="?", help="corpus name (omit to list them)")
    d.add_argument("--data-dir", default="data", type=Path)
    p = sub.add_parser("experiment", help="answer one of the paper's research questions: runs, tables, plots",
                       description="Run a grid of (arm, seed) trainings with matched per-task compute and"
                       " write OUT/results.md (mean ± std tables), OUT/results.json and learning-curve PNGs."
                       " Re-running the same command resumes an interrupted grid.",
                       epilog="examples:\n  multimodel experiment joint-vs-single --config demo --seeds 3\n"
                       "  multimodel experiment transfer --config demo --seeds 2"
                       " data.corpora_dir=../shared/corpora\n"
                       "  multimodel experiment add-task --config demo --new-task numbers_fr_en\n"
                       "  multimodel experiment baselines --run runs/demo --out results/baselines",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    esub = p.add_subparsers(dest="experiment", required=True, metavar="NAME", parser_class=_IntermixedParser)
    for name, text in (("joint-vs-single", "joint model vs. each task alone (RQ1, RQ2; paper Table 2)"),
                       ("ablation", "full vs. no MoE vs. no attention (RQ3; paper Table 4)"),
                       ("transfer", "parsing alone vs. + image task vs. + all tasks (RQ4; paper Table 3)"),
                       ("add-task", "add a task to a trained model: learning speed and forgetting")):
        e = esub.add_parser(name, help=text, description=text)
        _add_config_args(e)
        e.add_argument("--seeds", type=_int_at_least(1), default=3, help="seeds per arm (default 3)")
        e.add_argument("--out", type=Path, default=None, help=f"results directory (default results/{name})")
        e.add_argument("--fixed-data-seed", action="store_true",
                       help="vary only train.seed across seeds (data, and built-in corpora, stay the same)")
        e.add_argument("--schedule", choices=["matched", "global"], default=None,
                       help="matched (default): a run with fewer steps than the reference run scales its"
                       " warm-up by its steps / the reference's, so each task meets the same learning rate"
                       " after the same number of its own steps; global: every run keeps train.warmup_steps")
        if name == "joint-vs-single":
            e.add_argument("--compute", choices=["task", "total"], default=None,
                           help="single-task runs get the steps their task had in the joint run (task,"
                           " default) or all train.steps (total)")
        if name == "transfer":
            e.add_argument("--parsing-task", default=None,
                           help="the parsing task (default ptb_parsing if its data is found, else grammar_parsing)")
            e.add_argument("--image-task", default=None, help="the image task (default fashion_mnist)")
            e.add_argument("--match", choices=["parsing", "all"], default=None,
                           help="parsing (default): parsing gets train.steps in every arm; all: with-all runs"
                           " train.steps and the other arms give parsing the steps it had there")
        if name == "add-task":
            e.add_argument("--new-task", default=None, help="the task added (default: the last of data.tasks)")
            e.add_argument("--add-steps", type=_int_at_least(1), default=None,
                           help="steps after adding the task (default train.steps)")
    text = "a MultiModel run vs. a standard single-task model per task (paper Table 1)"
    e = esub.add_parser("baselines", help=text, description=text + ": each baseline trains on the run's"
                        " batches of its task, as many as the task got in the run, and is scored like the run."
                        " Writes OUT/results.md, OUT/results.json; re-running reuses finished tasks.",
                        epilog="example: multimodel experiment baselines --run runs/demo --tasks fashion_mnist"
                        " numbers_en_de --out results/baselines")
    e.add_argument("--run", required=True, type=Path, help="a finished `multimodel train` run directory")
    e.add_argument("--steps", type=_int_at_least(1), default=None,
                   help="training steps of every baseline (default: the batches each task got in the run)")
    e.add_argument("--tasks", nargs="+", default=None,
                   help="a subset of the run's tasks, space- or comma-separated (default: all)")
    e.add_argument("--out", type=Path, default=None, help="results directory (default results/baselines)")
    e.add_argument("--data-dir", default=None, help="where the task data is (default: the run's data.data_dir)")
    e.add_argument("--hidden-size", type=_int_at_least(1), default=None,
                   help="d_model of the Transformer baselines (default: the run's model.hidden_size)")
    e.add_argument("--learning-rate", type=float, default=None, help="Adam's learning rate (default 1e-3)")
    e.add_argument("--warmup-steps", type=_int_at_least(0), default=None,
                   help="linear warm-up steps, at most a tenth of the steps (default 100)")
    e.add_argument("--normalize-gradients", action=argparse.BooleanOptionalAction, default=None,
                   help="rescale each step's gradient to norm 1 instead of clipping it (default: as the run's"
                   " train.normalize_gradients)")
    e.add_argument("--eval-every", type=_int_at_least(0), default=0,
                   help="also score each baseline on the run's first data.eval_size held-out examples every N"
                   " steps, with its training time so far (benchmarks/time_to_target.py reads it); 0 = off")
    e.add_argument("--match-run-evals", action="store_true",
                   help="also score each baseline after as many steps on its task as the run had had at each of"
                   " its evaluations while training (train.eval_every), and tabulate the two side by side")
    e.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")

    p = sub.add_parser("reproduce", help="every experiment of the paper, seeds, intervals and one report",
                       description="Plan every research question of the paper (joint vs. single, ablations,"
                       " transfer to parsing, the real WSJ sample when data.corpora_dir has it), the single-task"
                       " baselines, adding a task with a control and the routing analysis over shared runs;"
                       " state the estimated budget; run them seed by seed (resumable) and write OUT/report.md"
                       " and OUT/report.json.",
                       epilog="examples:\n  multimodel reproduce --estimate-only data.corpora_dir=../shared/corpora\n"
                       "  multimodel reproduce data.corpora_dir=../shared/corpora   (= make reproduce)\n"
                       "  multimodel reproduce --quick --out results/reproduce-tiny",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["demo", "tiny"], default="demo",
                   help="demo (default): the demo model on the eight built-in tasks, 3 seeds (1 h 49 min on 2"
                   " cores with --jobs 2); tiny: the whole pipeline at toy size in under a minute")
    p.add_argument("--quick", action="store_true", help="the same as --preset tiny")
    p.add_argument("--seeds", type=_int_at_least(1), default=None, help="seeds per arm (default: the preset's)")
    p.add_argument("--out", type=Path, default=Path("results") / "reproduce",
                   help="results directory (default results/reproduce)")
    p.add_argument("--schedule", choices=["matched", "global"], default="matched",
                   help="warm-ups scaled to each run's steps (matched, default) or all as configured (global)")
    p.add_argument("--estimate-only", action="store_true",
                   help="plan, calibrate and print the budget; train nothing")
    p.add_argument("--jobs", type=_int_at_least(1), default=1,
                   help="runs trained at once, each in its own process with 1/JOBS of torch's threads"
                   " (default 1; make reproduce uses 2: a demo-size run keeps about one CPU core busy)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="changes to the preset's config, e.g. data.corpora_dir=../shared/corpora train.steps=1000")

    p = sub.add_parser("analyze-routing", help="which experts each task uses: heatmaps and a summary",
                       epilog="example: multimodel analyze-routing runs/demo --out runs/demo/routing")
    p.add_argument("path", type=Path, help=CHECKPOINT_HELP)
    p.add_argument("--out", type=Path, default=None, help="output directory (default PATH/routing)")
    p.add_argument("--source", choices=["auto", "heldout", "training"], default="auto",
                   help="heldout: route held-out data through the checkpoint in eval mode; training: the"
                   " run's routing.json; auto (default): heldout when possible")
    p.add_argument("--data-dir", default=None, help="where the held-out data is (default: the config's)")
    p.add_argument("--eval-size", type=_int_at_least(1), default=None, help="held-out examples per task (default: the config's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(_dispatch(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 — the one place that turns errors into messages
        if args.debug or not _is_user_error(err):
            raise
        print(f"multimodel {args.command}: error: {err}", file=sys.stderr)
        return 2


USER_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
"""Files that are missing or unreadable: the user's to fix, whatever raised them."""


def _is_user_error(err: Exception) -> bool:
    """True for errors the user can fix (one line, exit 2); False for bugs (a traceback)."""
    from multimodel.errors import UserError

    return isinstance(err, (UserError, *USER_OS_ERRORS))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "train":
        return cmd_train(args)
    if args.command == "eval":
        return cmd_eval(args)
    if args.command == "predict":
        return cmd_predict(args)
    if args.command == "tasks":
        return cmd_tasks(args)
    if args.command == "info":
        return cmd_info(args)
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "data":
        return cmd_data(args)
    if args.command == "experiment":
        return cmd_experiment(args)
    if args.command == "analyze-routing":
        return cmd_analyze_routing(args)
    if args.command == "reproduce":
        return cmd_reproduce(args)
    raise AssertionError(args.command)


def cmd_train(args: argparse.Namespace) -> int:
    from multimodel.config import ConfigError, load_config
    from multimodel.training.run import train_and_evaluate

    cfg = load_config(args.config, args.overrides) if args.config else None
    resume = args.resume or args.resume_from is not None
    if cfg is None and not resume:
        raise ConfigError("give --config (or --resume an existing --run-dir)")
    if cfg is None and args.overrides:
        raise ConfigError("overrides need --config")
    train_and_evaluate(cfg, args.run_dir, resume=resume, resume_from=args.resume_from, overwrite=args.overwrite,
                       evaluate=not args.no_eval, progress=not args.no_progress,
                       blind_control=not args.no_blind)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from multimodel.training.run import evaluate_checkpoint

    results = evaluate_checkpoint(args.checkpoint, tasks=args.tasks, beam_size=args.beam_size,
                                  length_penalty=args.length_penalty, data_dir=args.data_dir,
                                  blind_control=not args.no_blind)
    if args.json:
        args.json.write_text(json.dumps([r.to_json() for r in results], indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from multimodel.predict import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint)
    if args.image is not None:
        for line in predictor.describe_image(args.image, beam_size=args.beam_size, task=args.task):
            print(line)
    elif args.audio is not None:
        print(predictor.transcribe(args.audio, beam_size=args.beam_size, task=args.task))
    else:
        out = predictor.from_text(args.text, args.to, beam_size=args.beam_size, task=args.task)
        print(out)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from multimodel.errors import MissingExtraError

    try:
        from multimodel.serve import serve
    except ImportError as err:
        raise MissingExtraError("the web demo", "serve", err) from None

    serve(args.checkpoint, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb)
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from multimodel.config import Config, ConfigError, apply_overrides, load_config
    from multimodel.tasks.task_data import task_statuses

    if args.overrides and not args.config:
        raise ConfigError("overrides need --config")
    cfg = load_config(args.config, args.overrides) if args.config else Config()
    if args.data_dir is not None:
        cfg = apply_overrides(cfg, [f"data.data_dir={args.data_dir!r}"])
    statuses = task_statuses(cfg)
    rows = [("task", "mirrors", "input → output", "token", "data")]
    for status in statuses:
        task = status.task
        if task is None:
            rows.append((status.name, "declared", "?", "?", status.state))
            continue
        rows.append((task.name, task.paper_task, f"{task.input_modality} → {task.target_modality}",
                     task.task_token or "-", status.state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for status in statuses:
        if status.problem:
            line = status.problem if status.problem.startswith(f"task {status.name}:") else \
                f"task {status.name}: {status.problem}"
            print(textwrap.fill(line, width=100, subsequent_indent="    ", break_long_words=False,
                                break_on_hyphens=False))  # paths stay whole
    if not cfg.data.declared_tasks:
        print("declare tasks over your own data in a config (data.declared_tasks): see"
              " `multimodel tasks --config examples/image_folder` and the README's \"Your own tasks\"")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from multimodel.config import ConfigError, load_config
    from multimodel.model.multimodel import MultiModel
    from multimodel.tasks import get_task
    from multimodel.tasks.task_data import modality_specs

    cfg = load_config(args.config, args.overrides)
    tasks = [get_task(n, cfg) for n in cfg.data.tasks]
    for task in tasks:
        if task.target_modality == "class_label":  # a declared classifier whose labels are read from its data
            raise ConfigError(f"task {task.name}: its number of classes comes from its data, which is not"
                              f" here ({task.available(Path(cfg.data.data_dir))}); give"
                              f" data.declared_tasks.{task.name}.labels, or put the data in place")
    specs = modality_specs(tasks)
    with torch.device("meta"):
        model = MultiModel(cfg.model, cfg.data.vocab_size, specs)
    total = sum(p.numel() for p in model.parameters())
    print(f"config {args.config}: hidden {cfg.model.hidden_size}, experts {cfg.model.moe.num_experts}"
          f" (top {cfg.model.moe.top_k}), vocabulary {cfg.data.vocab_size}, tasks {len(cfg.data.tasks)}")
    for name, child in model.named_children():
        n = sum(p.numel() for p in child.parameters())
        print(f"  {name:<20} {n:>15,d}")
    print(f"  {'total':<20} {total:>15,d}  ({total / 1e6:.1f}M parameters)")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from multimodel.corpora import download

    if not args.name:
        for name, entry in download.CORPORA.items():
            print(f"{name}: {entry.description}")
        return 0
    download.download_corpus(args.name, args.data_dir)
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    import shlex

    from multimodel.config import load_config
    from multimodel.experiments import run_experiment

    if args.experiment == "baselines":
        return cmd_baselines(args)
    cfg = load_config(args.config, args.overrides)
    out = args.out if args.out is not None else Path("results") / args.experiment
    options = {k: getattr(args, k, None)
               for k in ("compute", "parsing_task", "image_task", "match", "new_task", "add_steps", "schedule")}
    words = ["multimodel", "experiment", args.experiment, "--config", str(args.config), "--seeds", str(args.seeds),
             "--out", str(out)] + (["--fixed-data-seed"] if args.fixed_data_seed else [])
    words += [w for k, v in options.items() if v is not None for w in (f"--{k.replace('_', '-')}", str(v))]
    run_experiment(args.experiment, cfg, seeds=args.seeds, out=out, command=shlex.join(words + args.overrides),
                   vary_data_seed=not args.fixed_data_seed, **options)
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    import shlex

    from multimodel.experiments.baselines import run_baselines

    out = args.out if args.out is not None else Path("results") / "baselines"
    tasks = [t for item in args.tasks for t in item.split(",") if t] if args.tasks else None
    words = ["multimodel", "experiment", "baselines", "--run", str(args.run), "--out", str(out)]
    for flag, value in (("--steps", args.steps), ("--data-dir", args.data_dir), ("--hidden-size", args.hidden_size),
                        ("--learning-rate", args.learning_rate), ("--warmup-steps", args.warmup_steps),
                        ("--eval-every", args.eval_every or None)):
        if value is not None:
            words += [flag, str(value)]
    if args.normalize_gradients is not None:
        words.append("--normalize-gradients" if args.normalize_gradients else "--no-normalize-gradients")
    if args.match_run_evals:
        words.append("--match-run-evals")
    if tasks:
        words += ["--tasks", *tasks]
    run_baselines(args.run, out=out, steps=args.steps, tasks=tasks, data_dir=args.data_dir,
                  command=shlex.join(words), progress=not args.no_progress, eval_every=args.eval_every,
                  match_run_evals=args.match_run_evals, hidden_size=args.hidden_size,
                  learning_rate=args.learning_rate, warmup_steps=args.warmup_steps,
                  normalize_gradients=args.normalize_gradients)
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    import shlex

    from multimodel.experiments.reproduce import reproduce

    preset = "tiny" if args.quick else args.preset
    words = ["multimodel", "reproduce", "--preset", preset, "--out", str(args.out)]
    words += (["--seeds", str(args.seeds)] if args.seeds else []) + (["--schedule", args.schedule]
                                                                      if args.schedule != "matched" else [])
    words += ["--jobs", str(args.jobs)] if args.jobs > 1 else []
    reproduce(preset, out=args.out, seeds=args.seeds, overrides=args.overrides, schedule=args.schedule,
              estimate_only=args.estimate_only, command=shlex.join(words + args.overrides), jobs=args.jobs)
    return 0


def cmd_analyze_routing(args: argparse.Namespace) -> int:
    from multimodel.experiments.routing_analysis import analyze_routing

    analyze_routing(args.path, args.out, source=args.source, data_dir=args.data_dir, eval_size=args.eval_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
