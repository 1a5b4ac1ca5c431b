"""The LLM Economist: a tax planner over a population of workers, as a PettingZoo ParallelEnv.

After "LLM Economist: Large Population Models and Mechanism Design in Multi-Agent Generative
Simulacra" (arXiv 2507.15815). Seats: `planner` and `worker_0` ... `worker_{N-1}` (`num_workers`,
default 10; scripted runs go to 10,000 workers).

Workers. Every step each worker chooses labor l in [0, 100] hours and earns z = v·l at its skill
v, an hourly wage drawn at reset: the GB2 fit of US incomes (ACS 2023) divided by 40 hours, or
uniform on [1.24, 159.1] (`skill_distribution`). Income is taxed with piecewise-linear marginal
rates τ_j on the brackets [b_j, b_{j+1}) (`brackets`: `us_federal` 2024 cutoffs, `three`, `flat`),

    T(z) = Σ_j τ_j · clip(z − b_j, 0, b_{j+1} − b_j),

and all revenue is rebated in equal shares: z̃ = z − T(z) + Σ_i T(z_i)/N. A worker's reward is
its isoelastic, quasi-linear utility u = z̃ − c·l^δ (c = 0.0005, δ = 3.5: labor elasticity
1/(δ−1) = 0.4). Each worker has a persona (age band, occupation, household, attitude), drawn from
a small table and written into its prompt.

The planner, the leader of a Stackelberg game, sets the schedule every `tax_period` (K) steps after
`warmup` steps at `initial_rate` percent in every bracket. Between its decisions it is passive
(`passive_action`), so its policy is asked only on its own steps. Its reward every step is the
social welfare SWF = Σ_i u_i / max(z_i, 1) (inverse-income weights; `welfare: utilitarian` gives
Σ_i u_i), so each of its decision records carries the SWF of the period that decision governed.

Timing: all agents act at once. The planner's schedule taxes the step it is chosen in; workers
see it, and respond to it, from the next step on. The planner's action is the schedule itself
(percent per bracket): an LLM planner moves each bracket by Δ in {−20, −10, 0, +10, +20} points,
while scripted baselines (Saez, US federal, flat) set their rates directly, as in the paper.

Both levels learn in context, as in the paper: the planner's prompt carries the schedules of the last
periods and the welfare each produced, what its last change did to welfare ("Your last change (+10, 0, -10) raised
welfare per step from 0.412 to 0.455") and the best schedule so far; a worker's prompt carries its last steps
(hours, income, tax, rebate, utility) and what its last change of hours did to its utility.

Persona utilities (`persona_scaling: true`, the paper's u = r·ũ): each worker also says whether, as its persona, it
is satisfied with the tax policy; its utility (its reward and its term in the SWF) is ũ when it is and
`dissatisfied_scale`·ũ (0.5) when not. A worker action without `satisfied` counts as satisfied: the best-response
worker's (whose ũ is never negative, since working 0 hours keeps the rebate, so saying YES is its best response).

Democratic mode (`democratic: true`): the workers elect the schedule change and the planner stays
passive. On the step before each decision every worker may stand with a platform (one Δ per
bracket) or decline; on the decision step every worker votes for one candidate, and the plurality
winner's platform (seeded tie-break) changes the schedule, which taxes that step as a planner's
would. No candidate: the schedule stays; a vote for a non-candidate does not count. A worker's
action is then `{"labor", "stand" (0/1), "platform" (indices into the Δ list), "vote" (a worker
index, or -1 for no vote: every step but a vote step, or an abstention; the space is
`Discrete(num_workers + 1, start=-1)`)}`.

Reply formats (case and markdown emphasis tolerated; anything else is a parse error whose message
says how to fix it):

    LABOR: 40                  a worker (the paper's {"LABOR": 40} also parses)
    DELTAS: +10, 0, -10        the planner: one change per bracket, in order
    STAND: -20, 0, +10         democratic stand step: a platform, or STAND: NO (after the LABOR line)
    VOTE: 2                    democratic vote step: the candidate's number in the prompt's list
    SATISFIED: YES             persona scaling: a worker's last line (YES or NO)

The reply grammar (`reply_grammar`, for constrained decoding) is the language of these canonical
forms at the seat's step: hours from 0 to 100 written plainly (up to 24 decimals), the STAND line on a
stand step and a VOTE for 1 to the number of standing candidates on a vote step; the planner's
DELTAS has one change per bracket, each keeping the rate within 0-100% (at 0% no cut; at 5% a cut
of 10 reaches 0%, so -20 is not offered).

Metrics per episode (means over steps): `swf`, `planner_swf` (after the warm-up), `mean_utility`,
`total_income`, `tax_revenue`, `gini_pre`, `gini_post`, `mean_labor`, `br_gap` (mean |l − l*|
between chosen labor and the exact best response to the schedule the worker saw), `rate/b<j>`
(the final schedule), with persona scaling `satisfied` (the share of satisfied workers) and, in
democratic mode, `election/count`, `election/candidate_share`, `election/turnout`. The run report adds the
series `step/*` and `schedule/b<j>`, the figure
`economy/schedule.png`, and `economy/comparison.json`: per episode, the planner's SWF next to that
of best-response workers under its final schedule, under Saez, US federal, a flat
`comparison_flat_rate` schedule and the Stackelberg optimum on the same population: `optimum`, the schedule that
maximises welfare given the workers' exact best responses (`stackelberg_optimum`, stackelberg.py; its rates in
`optimum_rates`), and `optimum_lattice`, the best schedule reachable in the planner's moves of 10 points
(`comparison_optimum: false` skips both). `compare/*` are the means, `compare/planner_over_optimum` the
share of the optimum's welfare the planner's final schedule reaches; democratic runs add
`economy/elections.json` and the series `election/platform/b<j>`.

Scripted workers (the exact best response, also as a voter) and planners (Saez, US federal, flat,
hill climbing) are in agents/scripted/economy.py.

Modules: `rules` (constants, the config, taxes, utilities, best responses, the Saez rates), `stackelberg` (the
leader's welfare optimum),
`world` (the ParallelEnv and its steps), `text` (prompts, the reply grammars and parsers), `report` (metrics
and the run report).
"""

from worlds.economy.rules import (
    BRACKETS,
    GB2_ACS_2023,
    PERSONAS,
    PLANNER,
    PLANNER_DELTAS,
    REFERENCE_HOURS,
    STAND,
    US_FEDERAL_RATES,
    VOTE,
    EconomyConfig,
    best_response_labor,
    best_response_value,
    gini,
    platform_deltas,
    plurality_winner,
    post_tax_incomes,
    saez_rates,
    sample_gb2,
    social_welfare,
    tax,
    utility,
)
from worlds.economy.stackelberg import StackelbergOptimum, baseline_welfare, planner_lattice, stackelberg_optimum
from worlds.economy.world import env, parallel_env, raw_env

__all__ = [
    "BRACKETS",
    "GB2_ACS_2023",
    "PERSONAS",
    "PLANNER",
    "PLANNER_DELTAS",
    "REFERENCE_HOURS",
    "STAND",
    "US_FEDERAL_RATES",
    "VOTE",
    "EconomyConfig",
    "StackelbergOptimum",
    "baseline_welfare",
    "best_response_labor",
    "best_response_value",
    "env",
    "gini",
    "parallel_env",
    "planner_lattice",
    "platform_deltas",
    "plurality_winner",
    "post_tax_incomes",
    "raw_env",
    "saez_rates",
    "sample_gb2",
    "social_welfare",
    "stackelberg_optimum",
    "tax",
    "utility",
]
