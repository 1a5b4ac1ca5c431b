"""Team problem solving with deferral to an expert, as a PettingZoo AECEnv.

After HILA, "Adaptive Collaboration with Humans: Metacognitive Policy Optimization for Multi-Agent
LLMs with Continual Learning" (arXiv 2603.07972). Seats: the team `agent_0` ... (`team_size`,
default 3) and `expert`.

A game: the team answers one problem over `rounds` rounds (default 3).

- Round 0: every agent answers on its own.
- Each later round: every agent, looking at the answers as they stood when the round began, picks
  one metacognitive action: `EVAL j`, adopt agent j's latest answer (j another agent; free);
  `CREATE`, give a new answer of its own (costs `create_cost`, 0.1); or `DEFER`, ask the expert
  (costs `defer_cost`, 0.3).
- The expert acts only at the end of a round in which someone deferred: its answer becomes the
  answer of every agent that deferred, and its optional explanation is shown to the team.
- The team's answer is the majority of the agents' last answers (ties broken by the episode seed).

Rewards: each team agent's return is 1[team correct] − defer_cost·#DEFER − create_cost·#CREATE;
the costs are paid on the step of the decision, the team reward on the last step. The expert gets
0. Answers are compared after `normalize_answer` (numbers by value: `1,234.0` = `1234`, `$12.50` =
`12.5`, `3/4` = `0.75`; other text by case and whitespace). An illegal action (EVAL of oneself or
of no agent, anything but CREATE in round 0) keeps the agent's previous answer at no cost and is
flagged `info["illegal_action"]`; the text interface never produces one.

Problems are generated with exact answers, no download: `arithmetic` (`What is (34 + 12) * 7 -
15?`), `word` problems (1-3 steps; divisions come out exact) and `closed` questions about
fictional companies whose facts live in a private table drawn from `facts_seed`: only the expert
knows them, so deferring is the only way to be right. Difficulty 1-3 is the number of steps (or
two facts); `kinds` weighs the generators, `difficulties` lists the levels drawn. `problems_file`
reads a JSONL set instead (`question`, `answer`, optional `note` for the expert, `difficulty`,
`explanation`).

What each seat sees: team agents get the question and everyone's answers as the round began, with
the expert-given answers marked and the expert's explanations, never the private facts or the true
answer (`oracle_observations` adds it, for the `oracle` baseline only). The expert sees the
question, the private facts it needs (`note`), the team's answers and who asked; its prompt omits
the true answer, which a simulated expert reads from its structured observation.

Reply formats (case, markdown and filler words tolerated; two actions, EVAL of oneself or of no
agent, or a missing answer are parse errors with a message the agent gets on its retry):

    ANSWER: 42                  round 0 ('The answer is 42.' and a bare '42' work too)
    EVAL 2 | CREATE 42 | DEFER  later rounds ('eval agent 2', 'Action: defer' work too)
    ANSWER: 417                 the expert: the answer, then an optional explanation line
    EXPLANATION: 412 + 5 = 417  ('417; 412 + 5 = 417' works too)

The reply grammar (`reply_grammar`, for constrained decoding) is the language of these canonical
forms at the seat's turn: EVAL names another agent of this team, answers are plain numbers when the
problem's answer is a number (else one line of free text, at most 60 characters), the expert's
explanation is one line of at most 300. A reply in it is read by its structure, so an answer or
explanation that mentions 'DEFER' or 'EVAL 0' is never taken for a command.

Metrics per episode: `correct`, `deferrals`, `deferral_rate` (of the team's decisions),
`creates`, `cost` and `reward` (means per team agent), `expert_calls`, `round0_correct` (the
team's strict plurality after round 0 was right), `illegal`, `difficulty`. The run report adds
accuracy overall, by difficulty and by kind, and the calibration of deferral pooled over decisions,
P(DEFER | team would be wrong) vs P(DEFER | team would be right) ("right": the true answer holds a
strict plurality when the round begins), with the figure `deferral/accuracy_and_calibration.png`
and the table `deferral/decisions.json`; `episode_info` holds the problem, the answers per round
and every decision.

Scripted team baselines and the simulated expert are in agents/scripted/deferral.py.

Modules: `rules` (actions, answers and how they compare, the majority), `problems` (generated
problems, the private fact table, problem files), `world` (the config and the AECEnv), `text`
(prompts, demonstrations, the reply grammar and parser), `report` (metrics, the run report, the cost figure).
"""

from worlds.deferral.problems import Problem, evaluate_formula, fact_table, load_problems
from worlds.deferral.report import tradeoff_figure
from worlds.deferral.rules import (
    CREATE,
    DEFER,
    EVAL,
    EXPERT,
    format_number,
    majority_answer,
    normalize_answer,
    number_value,
    team_would_be_right,
)
from worlds.deferral.world import DeferralConfig, env, raw_env

__all__ = [
    "CREATE",
    "DEFER",
    "EVAL",
    "EXPERT",
    "DeferralConfig",
    "Problem",
    "env",
    "evaluate_formula",
    "fact_table",
    "format_number",
    "load_problems",
    "majority_answer",
    "normalize_answer",
    "number_value",
    "raw_env",
    "team_would_be_right",
    "tradeoff_figure",
]
