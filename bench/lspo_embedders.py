"""LSPO's two embedders on the same candidate statements: time, and how well k-means on each recovers
what the game reacts to in a statement (whether it claims the seer role, and its accusation kind).

    python bench/lspo_embedders.py [checkpoints/werewolf-lspo/iter-000001/candidates.json] [k]

Purity = Σ_clusters (largest behaviour class in the cluster) / candidates, per role, averaged over
roles; `chance` is the mean purity of random labelings with the same cluster sizes (200 draws).
Both embedders cluster the same texts with the same seed; the ratio is minilm / policy.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

import numpy as np

from agora.models import EMBEDDED, load_causal_lm
from trainers.lspo import embed_minilm, embed_with_policy, kmeans_clusters
from worlds.werewolf import SEER_CLAIM


def purity(labels: np.ndarray, classes: list[str]) -> float:
    return sum(Counter(c for c, l in zip(classes, labels) if l == k).most_common(1)[0][1] for k in set(labels.tolist())) / len(classes)


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "checkpoints/werewolf-lspo/iter-000001/candidates.json"
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    candidates = json.load(open(path))
    texts = [c["statement"].strip() or "(says nothing)" for c in candidates]
    classes = [f"{bool(SEER_CLAIM.search(c['statement']))}/{c['accusation']}" for c in candidates]
    roles = sorted({c["role"] for c in candidates})
    print(f"{len(texts)} candidates of {len(roles)} roles from {path}; behaviour classes: {dict(Counter(classes))}")

    model, tokenizer = load_causal_lm(EMBEDDED)
    embed_minilm(texts[:2])  # load once outside the timing
    results = {}
    for name, embed in (("minilm", embed_minilm), ("policy", lambda t: embed_with_policy(model, tokenizer, t))):
        start = time.perf_counter()
        vectors = embed(texts)
        seconds = time.perf_counter() - start
        scores, chance = [], []
        rng = np.random.default_rng(0)
        for r, role in enumerate(roles):
            idx = [i for i, c in enumerate(candidates) if c["role"] == role]
            labels, _ = kmeans_clusters(vectors[idx], k, seed=r)
            mine = [classes[i] for i in idx]
            scores.append(purity(labels, mine))
            chance.append(np.mean([purity(rng.permutation(labels), mine) for _ in range(200)]))
        results[name] = float(np.mean(scores))
        print(f"{name}: {seconds:.2f} s for {len(texts)} texts ({len(texts) / seconds:.0f} texts/s), dim {vectors.shape[1]}, "
              f"behaviour purity {np.mean(scores):.3f} (chance {np.mean(chance):.3f})")
    print(f"purity minilm/policy = {results['minilm'] / results['policy']:.2f}")


if __name__ == "__main__":
    main()
