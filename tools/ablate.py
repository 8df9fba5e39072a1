#!/usr/bin/env python
"""Does Instruction Pre-Training help on this corpus, at this scale? Builds the arms of a plan (Vanilla / Mix / IPT)
at one token budget, pre-trains each over several seeds, evaluates every checkpoint and reports the differences
with bootstrap confidence intervals (RUN/report/report.md). Resumable: rerun the same command after any stop.

    python tools/ablate.py --plan plan.yaml --run-dir runs/ablation [--set token_budget=2000000 ...] [--dry-run]

The plan's keys, the stages and the statistics are in docs/ablation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plan", required=True, help="the plan: a YAML or JSON file (docs/ablation.md)")
    p.add_argument("--run-dir", required=True, help="where every stage's outputs, logs and the report go")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a plan key (dotted for nested keys, value read as YAML), e.g. --set seeds=[1,2] "
        "--set layout.nproc_per_node=8; may be repeated",
    )
    p.add_argument("--workers", type=int, default=1, help="tools/preprocess_data.py --workers for packing")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the plan, print it resolved and every stage's command; run nothing",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from megatron_ipt.ablation import pipeline
    from megatron_ipt.ablation.plan import PlanError, check_held_out, differing_keys, load_plan, resolved
    from megatron_ipt.ablation.stages import RunLock, Runner, Stage
    from megatron_ipt.errors import UserError
    from megatron_ipt.io.atomic import write_json_atomic

    try:  # everything about the plan is checked before any work starts
        plan = load_plan(args.plan, args.overrides)
        check_held_out(plan)
        # the budget check tokenizes the corpus: a dry run (e.g. DRY_RUN=1 of a GPU script) only prints the plan
        unique = None if args.dry_run else pipeline.check_budget_reachable(plan)
        plan_json = resolved(plan)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    derived = plan_json["derived"]
    print(
        f"ablation: arms {', '.join(a.name for a in plan.arms)} x seeds {plan.seeds} | "
        f"{derived['train_iters']} iterations x {plan.global_batch_size} x {plan.seq_length} = "
        f"{derived['tokens_seen_per_run']:,} tokens per run (budget {plan.token_budget:,})"
        + (f" | raw texts {unique:,} tokens ({plan.token_budget / unique:.2f} passes)" if unique else "")
    )
    stages = pipeline.build_stages(plan, args.run_dir, args.workers)
    run_dir = os.path.abspath(args.run_dir)

    def write_report():
        from megatron_ipt.ablation.report import write_report as write

        report = write(run_dir, pipeline.report_inputs(plan, run_dir, stages))
        print(open(os.path.join(run_dir, "report", "report.md"), encoding="utf-8").read() if report else "")

    stages.append(Stage("report", "report", write_report, in_process=True, outputs=[os.path.join(run_dir, "report")]))
    if args.dry_run:
        print(json.dumps(plan_json, indent=1))
        for stage in stages:
            command = "(in-process) " + stage.name if stage.in_process else shlex.join(_dry_command(stage))
            print(f"# {stage.name}\n{command}")
        return 0
    try:
        os.makedirs(run_dir, exist_ok=True)
        with RunLock(run_dir):
            plan_path = os.path.join(run_dir, "plan.json")
            if os.path.exists(plan_path):
                with open(plan_path, encoding="utf-8") as f:
                    old = json.load(f)
                changed = differing_keys(old, plan_json)
                if changed:
                    shown = ", ".join(changed[:12]) + (f" (+{len(changed) - 12} more)" if len(changed) > 12 else "")
                    raise PlanError(
                        f"{run_dir} was made with another plan; keys that differ: {shown} "
                        "(rerun with the same plan to continue, or give a new --run-dir)"
                    )
            else:
                write_json_atomic(plan_path, plan_json)
            Runner(run_dir, stages).run()
    except UserError as error:  # PlanError: another plan in this run directory; StageFailed
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # an unwritable or full run directory
        print(f"error: {error.filename or run_dir}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(f"report: {os.path.join(run_dir, 'report', 'report.md')}")
    print(f"curves: tensorboard --logdir {os.path.join(run_dir, 'tensorboard')}")
    return 0


def _dry_command(stage):
    """The command a stage would run now (commands that look at earlier outputs see none in a dry run)."""
    return stage.action()


if __name__ == "__main__":  # required: the stages start processes
    sys.exit(main())
