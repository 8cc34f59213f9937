"""steerbench's own ``mmlu`` metric next to lm-evaluation-harness on the same questions.

Scores the shipped 285-question MMLU subset twice per condition, unsteered and under a
method's artifact: with steerbench's metric (argmax of the answer-letter logits) and with
lm-eval's ``steerbench_mmlu`` task (log-likelihood of " A".." D" through the harness), and
prints both accuracies and the number of questions whose predicted letter differs.
Produces the table in docs/lm-eval.md:

    python scripts/compare_mmlu_with_lm_eval.py --artifact results/default/artifacts/<cna key>

(``--limit N``: the task's first N questions on both sides, for a quicker check).
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext


def main() -> None:
    from steerbench.integrations.lm_eval import evaluate
    from steerbench.method import Artifact, get_method
    from steerbench.metrics.mmlu import LETTERS, predict, render_question, stratified_questions
    from steerbench.model.loading import load_model
    from steerbench.model.weights import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--artifact", required=True, help="artifact directory (any method)")
    parser.add_argument("--strength", type=float, default=0.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--limit", type=int, help="only the task's first N questions, on both sides (default: all)"
    )
    args = parser.parse_args()

    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    artifact = Artifact.load(args.artifact)
    method = get_method(artifact.method, **artifact.metadata.get("hyperparameters", {}))
    questions = stratified_questions(None)[: args.limit]  # the shipped subset, task order
    prompts = [render_question(q) for q in questions]
    print(f"model {lm.name}, {len(questions)} questions, dtype {next(lm.model.parameters()).dtype}")
    print(f"{'condition':28} {'steerbench mmlu':>16} {'lm-eval':>8} {'differ':>7} {'s':>6}")
    for label, context in (
        ("unsteered", nullcontext),
        (
            f"{artifact.method} @ {args.strength:g}",
            lambda: method.steer(lm.model, artifact, args.strength),
        ),
    ):
        start = time.perf_counter()
        with context():
            ours = predict(lm.model, lm.tokenizer, prompts, args.batch_size)
            harness = evaluate(
                lm, ["steerbench_mmlu"], limit=args.limit, batch_size=args.batch_size
            )
        samples = sorted(harness["samples"]["steerbench_mmlu"], key=lambda s: s["doc_id"])
        theirs = [
            LETTERS[max(range(4), key=lambda i, s=s: s["filtered_resps"][i][0])] for s in samples
        ]
        answers = [q["answer"] for q in questions]
        ours_acc = sum(p == a for p, a in zip(ours, answers)) / len(answers)
        theirs_acc = sum(p == a for p, a in zip(theirs, answers)) / len(answers)
        differ = sum(a != b for a, b in zip(ours, theirs))
        seconds = time.perf_counter() - start
        print(f"{label:28} {ours_acc:16.3f} {theirs_acc:8.3f} {differ:7d} {seconds:6.0f}")


if __name__ == "__main__":
    main()
