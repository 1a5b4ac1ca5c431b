"""The deferral world (HILA): PettingZoo contract, each rule on hand-checked cases, the generator,
what each seat sees, the forgiving-but-strict parser, the baselines and the simulated expert."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest
from matplotlib.figure import Figure
from pettingzoo.test import api_test, seed_test

from agents.scripted.deferral import AlwaysDefer, DeferWhenDisagree, NeverDefer, Oracle, SimulatedExpert
from agora.errors import AgoraError, ScenarioError
from agora.policy import ActRequest
from agora.rollout import Rollout
from agora.scenario import resolve_scenario
from agora.trajectory import Episode
from agora.world import ParseError, TextWorld
from tests.conftest import ROOT
from worlds.deferral.problems import Problem, evaluate_formula, fact_table, load_problems
from worlds.deferral.report import tradeoff_figure
from worlds.deferral.rules import CREATE, DEFER, EVAL, EXPERT, majority_answer, normalize_answer, team_would_be_right
from worlds.deferral.world import env, raw_env

ARITH = Problem("What is 6 + 4?", "10", 1, "arithmetic", "6 + 4", "", "6 + 4 = 10")
CLOSED = Problem(
    "Zorvex Labs will hire 5 more people. How many employees will it have then?",
    "417",
    2,
    "closed",
    "[Zorvex Labs|employees] + 5",
    "Zorvex Labs has 412 employees.",
    "412 + 5 = 417",
)


def world_with(problem: Problem = ARITH, seed: int = 0, **config):
    world = raw_env(**config)
    world.reset(seed=seed)
    world.problem = problem
    return world


def answer(a: str) -> dict:
    return {"type": CREATE, "target": 0, "answer": a}


def evaluate(j: int) -> dict:
    return {"type": EVAL, "target": j, "answer": ""}


DEFER_ACTION = {"type": DEFER, "target": 0, "answer": ""}


def ended(world) -> bool:
    return all(world.terminations.values())


def play(world, actions: list) -> dict[str, float]:
    """Step `actions` in turn order, return each seat's summed reward (as the rollout engine does)."""
    returns = {a: 0.0 for a in world.possible_agents}
    for action in actions:
        assert not any(world.terminations.values()), "episode ended early"
        world.step(action)
        for agent, reward in world.rewards.items():
            returns[agent] += reward
    return returns


def test_pettingzoo_api_and_seed():
    api_test(raw_env(), num_cycles=100)
    api_test(env(team_size=2, rounds=2), num_cycles=100)
    api_test(raw_env(oracle_observations=True, rounds=1), num_cycles=50)
    seed_test(lambda: raw_env(), num_cycles=50)
    assert isinstance(raw_env(), TextWorld)


# --- rules ---------------------------------------------------------------------------------


def test_rewards_by_hand_defaults():
    world = world_with()
    returns = play(
        world,
        [
            answer("10"),
            answer("10"),
            answer("3"),  # round 0
            DEFER_ACTION,
            answer("10"),
            evaluate(0),  # round 1: 0 defers, 1 creates, 2 adopts 0's round-0 answer
            {"answer": "10", "explanation": "6 + 4 = 10"},  # the expert, because agent 0 deferred
            evaluate(1),
            evaluate(0),
            evaluate(0),  # round 2, free
        ],
    )
    assert ended(world) and world.team_answer == "10" and world.correct
    assert returns == pytest.approx({"agent_0": 1 - 0.3, "agent_1": 1 - 0.1, "agent_2": 1.0, EXPERT: 0.0})


def test_costs_are_configurable_and_paid_when_wrong():
    world = world_with(defer_cost=0.5, create_cost=0.2)
    returns = play(
        world,
        [
            answer("1"),
            answer("2"),
            answer("3"),
            DEFER_ACTION,
            answer("4"),
            answer("4"),
            {"answer": "5", "explanation": ""},
            DEFER_ACTION,
            evaluate(0),
            evaluate(0),
            {"answer": "9", "explanation": ""},
        ],
    )
    assert world.answers == ["9", "5", "5"] and world.team_answer == "5" and not world.correct
    assert returns == pytest.approx({"agent_0": -1.0, "agent_1": -0.2, "agent_2": -0.2, EXPERT: 0.0})
    assert world.episode_metrics()["cost"] == pytest.approx(1.4 / 3)


def test_round_zero_answers_are_free_and_one_round_ends_there():
    world = world_with(rounds=1)
    returns = play(world, [answer("10"), answer(" 10.0 "), answer("7")])
    assert ended(world) and world.correct and world.decisions == []
    assert returns == {"agent_0": 1.0, "agent_1": 1.0, "agent_2": 1.0, EXPERT: 0.0}


def test_eval_adopts_the_answer_as_the_round_began():
    world = world_with()
    play(world, [answer("1"), answer("2"), answer("3"), answer("7"), answer("8"), evaluate(1)])
    assert world.answers == ["7", "8", "2"]  # agent 2 took agent 1's round-0 answer, not the new 8


def test_expert_acts_only_after_a_deferral_and_answers_every_deferring_agent():
    world = world_with()
    play(world, [answer("1"), answer("2"), answer("3"), evaluate(1), evaluate(0), evaluate(0)])
    assert world.agent_selection == "agent_0" and world.round == 2  # nobody deferred: no expert turn
    play(world, [DEFER_ACTION, evaluate(0), DEFER_ACTION])
    assert world.agent_selection == EXPERT
    play(world, [{"answer": "10", "explanation": "six plus four"}])
    assert world.answers == ["10", "2", "10"] and world.from_expert == [1, 0, 1] and world.expert_answers == ["10"]
    assert world.correct and "expert explains: six plus four" in world.log[-1]


def test_majority_with_seeded_tie_break():
    assert majority_answer(["5", "5", "7"], np.random.default_rng(0)) == "5"
    assert majority_answer(["", "", "7"], np.random.default_rng(0)) == "7"
    assert majority_answer(["", ""], np.random.default_rng(0)) == ""
    picks = {majority_answer(["5", "7"], np.random.default_rng(s)) for s in range(20)}
    assert picks == {"5", "7"}
    assert [majority_answer(["5", "7", "9"], np.random.default_rng(s)) for s in range(10)] == [
        majority_answer(["5", "7", "9"], np.random.default_rng(s)) for s in range(10)
    ]


def test_team_would_be_right_needs_a_strict_plurality():
    assert team_would_be_right(["10", "10", "3"], "10")
    assert not team_would_be_right(["10", "3", "4"], "10")  # a three-way tie
    assert not team_would_be_right(["10", "3", "3"], "10")
    assert team_would_be_right(["10", "", ""], "10")


def test_illegal_actions_are_flagged_and_cost_nothing():
    world = world_with()
    returns = play(world, [evaluate(1), answer("10"), answer("10"), evaluate(0), answer("10"), DEFER_ACTION])
    assert world.infos["agent_0"].get("illegal_action") and world.illegal == 2
    assert world.answers[0] == ""  # round 0 needs an answer; EVAL of oneself in round 1 kept ''
    assert world.decisions[0]["action"] == "ILLEGAL"
    assert returns["agent_0"] == 0.0


# --- answers and problems ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("42", "42"),
        (" 42. ", "42"),
        ("1,234", "1234"),
        ("$12.50", "12.5"),
        ("12.0", "12"),
        ("-0", "0"),
        ("3/4", "0.75"),
        ("1/3", "1/3"),
        ("50%", "0.5"),
        ("  Paris  ", "paris"),
        ("New   York!", "new york"),
        ("'Blue'", "blue"),
        ("1, 2", "1, 2"),
    ],
)
def test_answers_are_normalized(text, canonical):
    assert normalize_answer(text) == canonical


def test_formulas_by_hand():
    facts = {("Zorvex Labs", "employees"): 412}
    assert evaluate_formula("(34 + 12) * 7 - 15", {}) == 307
    assert evaluate_formula("(3 * 11 + 3) / 6", {}) == 6
    assert evaluate_formula("[Zorvex Labs|employees] + 15", facts) == 427
    with pytest.raises(ValueError):
        evaluate_formula("[Zorvex Labs|offices] + 1", facts)  # unknown fact, no solver to guess it
    with pytest.raises(ValueError):
        evaluate_formula("__import__('os')", {})
    slipped = {evaluate_formula("20 + 22", {}, slip=1.0, rng=np.random.default_rng(s)) for s in range(20)}
    assert 42 not in slipped and all(abs(v - 42) <= 9 for v in slipped)
    guesses = {evaluate_formula("[Nobody|offices]", {}, rng=np.random.default_rng(s)) for s in range(20)}
    assert len(guesses) > 1 and all(2 <= g <= 30 for g in guesses)


def test_fact_table_is_seeded_and_in_range():
    table = fact_table(0, 8)
    assert table == fact_table(0, 8) and table != fact_table(1, 8)
    assert len({c for c, _ in table}) == 8
    assert all(40 <= v <= 2000 for (c, a), v in table.items() if a == "employees")


def python_value(formula: str, facts) -> Fraction:
    """An independent check of a formula's value: facts substituted, Python's own arithmetic."""
    text = formula
    for (company, attribute), value in facts.items():
        text = text.replace(f"[{company}|{attribute}]", str(value))
    assert "[" not in text
    return Fraction(eval(text)).limit_denominator(1000)  # noqa: S307 (our own generated digits and + - * / only)


@pytest.mark.parametrize("seed", range(60))
def test_generated_problems_are_seeded_and_answers_exact(seed):
    world = raw_env()
    world.reset(seed=seed)
    problem = world.problem
    again = raw_env()
    again.reset(seed=seed)
    assert again.problem == problem
    value = python_value(problem.formula, world.facts)
    assert value.denominator == 1 and problem.answer == str(value.numerator)
    assert value >= 0 or problem.kind == "arithmetic"  # stories and facts count things
    assert problem.difficulty in (1, 2, 3) and problem.kind in ("arithmetic", "word", "closed")
    if problem.kind == "closed":
        assert problem.note and all(f"{c} " in problem.note for c, _ in world.facts if f"[{c}|" in problem.formula)
        assert problem.note not in problem.question
    assert problem.solution.endswith(problem.answer)


def test_generator_covers_kinds_and_difficulties_and_follows_the_config():
    seen = set()
    for seed in range(200):
        world = raw_env()
        world.reset(seed=seed)
        seen.add((world.problem.kind, world.problem.difficulty))
    assert seen == {(k, d) for k in ("arithmetic", "word", "closed") for d in (1, 2, 3)}
    world = raw_env(kinds={"closed": 1.0}, difficulties=[3])
    for seed in range(10):
        world.reset(seed=seed)
        assert world.problem.kind == "closed" and world.problem.difficulty == 3


def test_problems_load_from_jsonl(tmp_path):
    path = tmp_path / "p.jsonl"
    rows = [
        {"question": "Capital of France?", "answer": "Paris", "note": "It is Paris.", "difficulty": 2},
        {"question": "Half of 5?", "answer": "2.50"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    problems = load_problems(path)
    assert [(p.answer, p.difficulty, p.note) for p in problems] == [("paris", 2, "It is Paris."), ("2.5", 1, "")]
    world = raw_env(problems_file=str(path))
    drawn = set()
    for seed in range(20):
        world.reset(seed=seed)
        drawn.add(world.problem.question)
    assert drawn == {"Capital of France?", "Half of 5?"}


@pytest.mark.parametrize(
    "content, error",
    [
        ('{"question": "q"}\n', "line 1: expected an object"),
        ('{"question": "q", "answer": 1}\nnot json\n', "line 2: not JSON"),
        ('{"question": "q", "answer": 1, "difficulty": 5}\n', "difficulty must be 1, 2 or 3"),
        ('{"question": "q", "answer": 1, "hint": "x"}\n', "unknown keys ['hint']"),
        ("\n", "no problems"),
    ],
)
def test_bad_problem_files_are_explained(tmp_path, content, error):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(ScenarioError, match="world.problems_file|world") as info:
        resolve_scenario(scenario_dict(world={"id": "deferral", "problems_file": str(path)}))
    assert error in str(info.value)


def scenario_dict(**changes) -> dict:
    data = {
        "name": "t",
        "world": {"id": "deferral"},
        "agents": {"agent_*": {"policy": "never_defer"}, "expert": {"policy": "simulated"}},
        "episodes": 4,
        "tracking": {"enabled": False},
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "world, error",
    [
        ({"id": "deferral", "kinds": {"riddle": 1.0}}, "unknown problem kinds ['riddle']"),
        ({"id": "deferral", "difficulties": [4]}, "difficulty levels are 1, 2 and 3"),
        ({"id": "deferral", "problems_file": "/nonexistent.jsonl"}, "is not a file"),
        ({"id": "deferral", "team_size": 1}, "world.team_size"),
    ],
)
def test_config_mistakes_are_explained(world, error):
    with pytest.raises(ScenarioError) as info:
        resolve_scenario(scenario_dict(world=world))
    assert error in str(info.value)


def test_expert_accuracy_must_cover_every_level():
    with pytest.raises(ScenarioError, match="each difficulty 1, 2 and 3"):
        resolve_scenario(
            scenario_dict(
                agents={"agent_*": {"policy": "never_defer"}, "expert": {"policy": "simulated", "accuracy": {1: 0.9}}}
            )
        )


# --- what each seat sees ----------------------------------------------------------------------


def test_team_sees_no_private_fact_or_true_answer():
    world = world_with(CLOSED)
    obs = world.observe("agent_0")
    assert set(obs) == {"round", "question", "difficulty", "answers", "from_expert", "history", "self", "formula"}
    for round_actions in ([answer("400"), answer("300"), answer("400")], [DEFER_ACTION, evaluate(0), evaluate(0)]):
        for agent, action in zip(world.team, round_actions):
            text = world.prompt(agent, world.observe(agent))
            assert "412" not in text and "417" not in text and "Zorvex Labs has" not in text
            world.step(action)
    assert "reference" in world_with(CLOSED, oracle_observations=True).observe("agent_1")


def test_expert_sees_the_note_and_team_answers_but_its_prompt_not_the_answer():
    world = world_with(CLOSED)
    play(world, [answer("400"), answer("300"), answer("400"), DEFER_ACTION, evaluate(0), DEFER_ACTION])
    obs = world.observe(EXPERT)
    assert obs["reference"] == "417" and list(obs["deferred"]) == [1, 0, 1] and obs["answers"] == ("400", "300", "400")
    text = world.prompt(EXPERT, obs)
    assert "Zorvex Labs has 412 employees." in text and "agent 1: 300" in text and "Agents 0, 2 asked" in text
    assert "417" not in text


def test_round_zero_is_independent_and_later_rounds_show_the_round_start():
    world = world_with()
    play(world, [answer("10")])
    assert "10" not in world.prompt("agent_1", world.observe("agent_1")).split("Question:")[1]
    play(world, [answer("11"), answer("12"), answer("99")])  # agent 0 creates 99 in round 1
    text = world.prompt("agent_1", world.observe("agent_1"))
    assert "agent 0: 10" in text and "agent 1 (you): 11" in text and "99" not in text
    assert "CREATE <answer>" in text and "costs 0.3" in text and "Round 2 of 3" in text


def test_expert_answers_and_explanations_are_shown_to_the_team_next_round():
    world = world_with()
    play(
        world,
        [
            answer("1"),
            answer("2"),
            answer("3"),
            DEFER_ACTION,
            evaluate(0),
            evaluate(0),
            {"answer": "10", "explanation": "6 + 4"},
        ],
    )
    text = world.prompt("agent_1", world.observe("agent_1"))
    assert "agent 0: 10 (from the expert)" in text and "The expert explained: 6 + 4" in text


# --- parser ---------------------------------------------------------------------------------


def decision_world(problem=ARITH):
    world = world_with(problem)
    play(world, [answer("1"), answer("2"), answer("3")])
    return world  # round 1, agent_0 to move


@pytest.mark.parametrize(
    "text, expected",
    [
        ("EVAL 2", evaluate(2)),
        ("eval agent 2", evaluate(2)),
        ("**Eval: agent_1**", evaluate(1)),
        ("I adopt agent 2.", evaluate(2)),
        ("DEFER", DEFER_ACTION),
        ("defer to the expert", DEFER_ACTION),
        ("CREATE 42", answer("42")),
        ("create: my answer is 1,234", answer("1234")),
        ("Action: CREATE 7.0", answer("7")),
    ],
)
def test_parser_reads_decisions_forgivingly(text, expected):
    world = decision_world()
    assert world.parse("agent_0", text) == expected


@pytest.mark.parametrize(
    "text, error",
    [
        ("EVAL 0", "you are agent 0"),
        ("EVAL 5", "there is no agent 5"),
        ("EVAL", "EVAL needs the agent"),
        ("EVAL 1 or maybe DEFER", "more than one action"),
        ("EVAL 1, no, EVAL 2", "more than one agent"),
        ("CREATE", "CREATE needs your new answer"),
        ("CREATE something", "no number"),
        ("ANSWER: 42", "no action"),
        ("", "empty reply"),
        ("deferral is nice", "no action"),
    ],
)
def test_parser_is_strict_about_meaning(text, error):
    world = decision_world()
    with pytest.raises(ParseError, match=error):
        world.parse("agent_0", text)


@pytest.mark.parametrize(
    "text, value",
    [
        ("ANSWER: 42", "42"),
        ("answer: **42**", "42"),
        ("The answer is 42.", "42"),
        ("42", "42"),
        ("I think 6 + 4 = 10. ANSWER: 10", "10"),
        ("CREATE 10", "10"),
        ("ANSWER: 12 x 4 = 48 apples", "48"),
        ("ANSWER:\n42", "42"),
        ("ANSWER: 8\n\nThe answer is 8, not 9", "8"),
    ],
)
def test_round_zero_answers(text, value):
    world = world_with()
    assert world.parse("agent_0", text) == answer(value)


@pytest.mark.parametrize(
    "text, error",
    [
        ("6 + 4 = 10", "several numbers"),
        ("DEFER", "in round 0"),
        ("EVAL 2", "in round 0"),
        ("I do not know", "no number"),
    ],
)
def test_round_zero_rejects_missing_or_ambiguous_answers(text, error):
    with pytest.raises(ParseError, match=error):
        world_with().parse("agent_0", text)


def test_text_answers_take_the_first_line():
    world = world_with(Problem("Capital of France?", "paris"))
    assert world.parse("agent_0", "ANSWER: Paris\nbecause it is") == answer("paris")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("417", {"answer": "417", "explanation": ""}),
        ("417; 412 + 5", {"answer": "417", "explanation": "412 + 5"}),
        ("ANSWER: 417\nEXPLANATION: they have 412 now", {"answer": "417", "explanation": "they have 412 now"}),
    ],
)
def test_expert_replies(text, expected):
    world = world_with(CLOSED)
    assert world.parse(EXPERT, text) == expected


def test_parser_survives_garbage_and_round_trips():
    rng = np.random.default_rng(0)
    alphabet = list("EVALCREATDFRevalcreatdfr 0123456789:;*_-\n agent,.")
    for _ in range(300):
        world = decision_world()
        text = "".join(rng.choice(alphabet, size=int(rng.integers(0, 40))))
        for agent in ("agent_0", EXPERT):
            try:
                world.parse(agent, text)
            except ParseError:
                pass
    world = decision_world()
    for action in (evaluate(2), answer("42"), DEFER_ACTION):
        assert world.parse("agent_0", world.render_action("agent_0", action)) == action
    expert = {"answer": "417", "explanation": "412 + 5"}
    assert world.parse(EXPERT, world.render_action(EXPERT, expert)) == expert
    zero = world_with()
    assert zero.parse("agent_0", zero.render_action("agent_0", answer("7"))) == answer("7")


def test_fallback_actions_are_legal_and_seeded():
    world = decision_world()
    picks = [world.fallback_action("agent_0", np.random.default_rng(s)) for s in range(20)]
    assert {p["type"] for p in picks} == {EVAL} and {p["target"] for p in picks} == {1, 2}
    assert picks == [world.fallback_action("agent_0", np.random.default_rng(s)) for s in range(20)]
    assert world_with().fallback_action("agent_0", np.random.default_rng(0))["type"] == CREATE


def test_demonstration_is_an_answer_then_a_deferral_on_other_problems():
    world = raw_env()
    world.reset(seed=3)
    messages = world.demonstration("agent_1")
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert world.parse("agent_1", messages[1]["content"]) == answer("42")
    play(world, [answer("1"), answer("2"), answer("3")])
    assert world.parse("agent_1", messages[3]["content"]) == DEFER_ACTION
    assert world.problem.question not in "".join(m["content"] for m in messages)
    assert world.demonstration(EXPERT) == []
    assert len(raw_env(rounds=1).demonstration("agent_0")) == 2  # no decision rounds to demonstrate


# --- baselines and the simulated expert ---------------------------------------------------------


def request(obs, agent="agent_0"):
    return ActRequest(0, agent, obs, [])


def team_obs(answers, me=0, reference=None, round_=1):
    obs = {
        "round": round_,
        "self": me,
        "answers": tuple(answers),
        "formula": "6 + 4",
        "difficulty": 1,
        "from_expert": [0] * len(answers),
    }
    if reference is not None:
        obs["reference"] = reference
    return obs


def decide(policy_class, obs, **params):
    policy = policy_class(policy_class.Config(**params), seed=0)
    return policy.act([request(obs, f"agent_{obs['self']}")])[0].action


def test_baseline_decisions_by_hand():
    assert decide(NeverDefer, team_obs(["3", "10", "10"])) == evaluate(1)
    assert decide(NeverDefer, team_obs(["10", "10", "3"], me=0)) == evaluate(1)  # keeps its answer for free
    assert decide(NeverDefer, team_obs(["10", "3", "3"], me=0))["type"] == EVAL
    assert decide(NeverDefer, team_obs(["5", "7", "9"], me=0), slip=0.0) == answer(
        "10"
    )  # holds the tie-broken '5' alone: solves again
    assert decide(AlwaysDefer, team_obs(["10", "10", "10"])) == DEFER_ACTION
    assert decide(DeferWhenDisagree, team_obs(["10", "10", "10"], me=2)) == evaluate(0)
    assert decide(DeferWhenDisagree, team_obs(["10", "10", "3"], me=2)) == DEFER_ACTION
    assert decide(Oracle, team_obs(["3", "4", "10"], reference="10")) == evaluate(2)
    assert decide(Oracle, team_obs(["10", "4", "5"], reference="10")) == DEFER_ACTION  # no one else is right
    assert decide(NeverDefer, team_obs([""] * 3, round_=0), slip=0.0) == answer("10")


def test_seat_mistakes_are_explained():
    with pytest.raises(AgoraError, match="oracle_observations: true"):
        decide(Oracle, team_obs(["1", "2", "3"]))
    with pytest.raises(AgoraError, match="plays team seats"):
        NeverDefer(NeverDefer.Config(), seed=0).act([request({"round": 1}, EXPERT)])
    with pytest.raises(AgoraError, match="expert seat only"):
        SimulatedExpert(SimulatedExpert.Config(), seed=0).act([request(team_obs(["1", "2", "3"]))])


def expert_obs(difficulty=2, reference="417"):
    return {"difficulty": difficulty, "reference": reference, "note": CLOSED.note, "solution": CLOSED.solution}


def test_simulated_expert_accuracy_and_explanation():
    def answers(accuracy, n=200, **obs):
        expert = SimulatedExpert(SimulatedExpert.Config(accuracy=accuracy), seed=3)
        return [expert.answer(expert_obs(**obs)) for _ in range(n)]

    assert all(
        a == {"answer": "417", "explanation": f"{CLOSED.note} {CLOSED.solution}"} for a in answers({1: 0, 2: 1, 3: 0})
    )
    wrong = answers({1: 1, 2: 0, 3: 1})
    assert all(
        a["answer"] != "417" and 417 - 41 <= int(a["answer"]) <= 417 + 41 and a["explanation"] == "" for a in wrong
    )
    right = np.mean([a["answer"] == "417" for a in answers({1: 1, 2: 1, 3: 0.7}, n=2000, difficulty=3)])
    assert 0.66 < right < 0.74
    assert answers({1: 0, 2: 0, 3: 0}, n=1, reference="paris") == [{"answer": "unknown", "explanation": ""}]
    assert answers({1: 0.5, 2: 0.5, 3: 0.5}, n=30) == answers({1: 0.5, 2: 0.5, 3: 0.5}, n=30)


def run_baseline(policy_class, episodes=300, seed=0, **world):
    team = policy_class(policy_class.Config(), seed=1)
    seats = {f"agent_{i}": team for i in range(3)}
    seats[EXPERT] = SimulatedExpert(SimulatedExpert.Config(), seed=2)
    rollout = Rollout(lambda: raw_env(**world), seats, {a: "x" for a in seats}, seed=seed, concurrency=32)
    return rollout.run(episodes)


def mean(episodes, key):
    return float(np.mean([e.metrics[key] for e in episodes]))


def test_baselines_order_as_expected():
    never = run_baseline(NeverDefer)
    always = run_baseline(AlwaysDefer)
    disagree = run_baseline(DeferWhenDisagree)
    oracle = run_baseline(Oracle, oracle_observations=True)
    assert mean(never, "deferrals") == 0 and mean(always, "deferral_rate") == 1.0
    # closed-world questions (30 %) are out of reach without the expert
    assert mean(never, "correct") < 0.75 < mean(disagree, "correct")
    assert mean(oracle, "correct") >= max(mean(never, "correct"), mean(disagree, "correct"))
    assert mean(oracle, "cost") < mean(always, "cost") and mean(oracle, "reward") > mean(always, "reward")
    for episode in disagree:  # it defers exactly when the answers differ as the round begins
        for d in episode.info["decisions"]:
            answers = episode.info["answers_by_round"][d["round"] - 1]
            assert (d["action"] == "DEFER") == (len(set(answers)) > 1 or not answers[0])


def test_run_report_calibration_by_hand():
    def episode(index, difficulty, correct, decisions):
        info = {
            "problem": {"difficulty": difficulty, "kind": "word"},
            "correct": correct,
            "decisions": [
                {"round": 1, "agent": "agent_0", "action": a, "team_right_before": r, "own_right_before": r}
                for a, r in decisions
            ],
        }
        return Episode(index=index, seed=0, policies={}, info=info)

    episodes = [
        episode(0, 1, True, [("DEFER", False), ("EVAL", False), ("EVAL", True)]),
        episode(1, 2, False, [("DEFER", False), ("DEFER", True), ("CREATE", True), ("EVAL", True)]),
    ]
    report = raw_env().run_report(episodes)
    assert report.metrics["eval/p_defer_given_team_wrong"] == pytest.approx(2 / 3)
    assert report.metrics["eval/p_defer_given_team_right"] == pytest.approx(1 / 4)
    assert report.metrics["eval/accuracy/difficulty_1"] == 1.0 and report.metrics["eval/accuracy/difficulty_2"] == 0.0
    assert report.metrics["eval/accuracy"] == 0.5 and report.metrics["eval/accuracy/word"] == 0.5
    assert isinstance(report.figures["deferral/accuracy_and_calibration.png"], Figure)
    assert len(report.tables["deferral/decisions.json"]["action"]) == 7


def test_same_seed_same_episodes():
    first = [(e.metrics, e.info) for e in run_baseline(DeferWhenDisagree, episodes=40, seed=4)]
    assert first == [(e.metrics, e.info) for e in run_baseline(DeferWhenDisagree, episodes=40, seed=4)]
    assert first != [(e.metrics, e.info) for e in run_baseline(DeferWhenDisagree, episodes=40, seed=5)]


def test_baselines_bench_prints_every_baseline_and_the_ratio():
    result = subprocess.run(
        [sys.executable, "bench/deferral_baselines.py", "--episodes", "40", "--no-track"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]}
    assert set(lines) == {"never_defer", "defer_when_disagree", "oracle", "always_defer"}
    assert (
        float(lines["never_defer"][-1]) == 1.0 and float(lines["always_defer"][2]) == 1.0
    )  # ratio to itself; deferral rate
    figure = tradeoff_figure([{"name": "a", "accuracy": 0.5, "cost": 0.1}, {"name": "b", "accuracy": 0.9, "cost": 0.6}])
    assert isinstance(figure, Figure) and len(figure.axes[0].collections) == 2


def test_garbage_llm_team_falls_back_and_finishes(tiny_model_dir):
    """A random 2-layer model writes garbage: every turn is re-asked once, then the seeded fallback."""
    from agents.llm import LLMPolicy

    team = LLMPolicy(
        LLMPolicy.Config(model=tiny_model_dir, max_new_tokens=4, device="cpu", demonstrations=False), seed=0
    )
    seats = {f"agent_{i}": team for i in range(3)} | {EXPERT: SimulatedExpert(SimulatedExpert.Config(), seed=1)}
    rollout = Rollout(lambda: raw_env(rounds=2), seats, {a: "x" for a in seats}, concurrency=2, max_retries=1)
    episodes = rollout.run(2)
    assert all(len(e.info["answers_by_round"]) == 2 for e in episodes)
    counters = rollout.counters["agent_0"]
    assert counters.decisions == 4 and counters.fallbacks == counters.decisions - (
        counters.text_attempts - counters.parse_failures
    )
    steps = [s for e in episodes for s in e.steps if s.agent == "agent_0"]
    assert all(s.logprobs and s.prompt.startswith("<|im_start|>") for s in steps)
    assert all(e.metrics["illegal"] == 0 for e in episodes)  # fallbacks are legal


def test_a_bare_answer_label_is_no_answer_as_the_fallback_writes_it():
    world = raw_env(rounds=2)
    world.reset(seed=0)
    rng = np.random.default_rng(0)
    for agent in ("agent_0", "expert"):
        fallback = world.fallback_action(agent, rng)
        assert world.render_action(agent, fallback).strip() == "ANSWER:" and world.parse(agent, "ANSWER:") == fallback
    with pytest.raises(ParseError):
        world.parse("agent_0", "the answer is")  # a label inside a sentence with nothing after it is still no reply


# --- hostile replies (issue #14) -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, error",
    [
        ("EVAL -1", "EVAL needs the agent"),  # was EVAL 1
        ("EVAL 1.9", "whole number"),  # was EVAL 1
        ("EVAL 1,5", "whole number"),
        ("EVAL " + "9" * 5000, "there is no agent"),
    ],
)
def test_eval_takes_only_a_whole_agent_number(text, error):
    with pytest.raises(ParseError, match=error):
        decision_world().parse("agent_0", text)


def test_a_digit_inside_binary_noise_is_no_answer():
    rng = np.random.default_rng(14)
    for _ in range(200):
        noise = rng.bytes(40).decode("latin-1") + "7" + rng.bytes(40).decode("utf-8", "replace")
        with pytest.raises(ParseError):
            world_with().parse("agent_0", noise)
    assert world_with().parse("agent_0", "7") == answer("7")


@pytest.mark.parametrize(
    "text", ["eval" + " " * 31_000 + "x", "explanation" + "1 " * 15_000, "ANSWER: " + "9" * 5000, "answer\n" * 4_000]
)
def test_parser_takes_linear_time_on_hostile_text(text):
    for world, agent in ((world_with(), "agent_0"), (decision_world(), "agent_0"), (world_with(CLOSED), EXPERT)):
        start = time.perf_counter()
        try:
            world.parse(agent, text)
        except ParseError:
            pass
        assert time.perf_counter() - start < 0.5
