"""Werewolf: social deduction with hidden roles, free-text discussion and votes, as a PettingZoo AECEnv.

Players and seats. Default: 7 players, 2 werewolves (who know each other), 1 seer, 1 doctor and 3
villagers; every count is a config key. Seats are named by role from the counts (`werewolf_0`,
`werewolf_1`, `seer_0`, `doctor_0`, `villager_0`...), so one policy per role is a glob in a
scenario file. Inside the game nobody sees seat names: the seed deals the seats to seating
positions, position i is called `names[i]` (Alice, Bob, ...), and every target is a position.

A game, night and day until one side wins:

- Night d: each living werewolf picks a victim, and their plurality choice is attacked (a tie is
  broken by a seeded draw among the tied choices); each seer inspects a living player and
  privately learns whether it is a werewolf; each doctor protects a living player (itself only
  with `doctor_self_protect`, the same player two nights running only with
  `doctor_repeat_protect`). The victim dies unless protected.
- Day d: the death (or a quiet night) is announced. Then `discussion_rounds` rounds in which each
  living player makes one free-text statement and may accuse one player, in a speaking order that
  starts one seat further round the table each day. Then every living player votes to eliminate a
  living player (or NOBODY, with `allow_abstain`): the plurality is eliminated, a tie (or a
  plurality for NOBODY) eliminates no one. `reveal_on_elimination` / `reveal_on_night_death` say
  whether a dead player's role is announced.
- End: the village wins when no werewolf lives, the werewolves when they are at least as many as
  the others. After `max_days` days without a winner the game is a draw (a truncation).

Rewards: +1 to each member of the winning side, -1 to the losers, 0 to everyone in a draw.

Observations hold only what their player may know: its own role and position, its private night
results (`notes`), and the public record (deaths, statements, accusations, votes, revealed roles,
seer claims: a statement saying "I am the seer" is recorded in `seer_claims`).

Actions: `{"target": position or n (nobody), "statement": text}`. At night and in the vote the
target counts and the statement is ignored; in the discussion the statement is the point and the
target an optional accusation. Legal targets are the observation's `target_mask` (also
`infos[agent]["action_mask"]`, gymnasium's mask format for the Dict action space); a masked-out
target counts as nobody and is flagged `infos[agent]["illegal_action"]`.

Reply format (text interface). The prompt names the role, the phase and the legal choices, and
reads one of these replies (case and markdown emphasis tolerated; a name that is not a legal
target now is a parse error naming the legal ones):

    KILL: Bob | INSPECT: Bob | PROTECT: Bob     night, by role
    VOTE: Bob                                   the day's vote
    SAY: Carol claims to be the seer, but she accused two of us.
    ACCUSE: Carol                               discussion (or NOBODY; the ACCUSE line may be left out)

The reply grammar (`reply_grammar`, for constrained decoding) is the canonical form of these, built
each turn from the parser's own labels and the legal targets now: one line `<LABEL>: <name>` at
night and in the vote (only living, legal targets; NOBODY only where allowed), and in the
discussion `SAY: <one line of at most max_statement_chars characters, or nothing>` then
`ACCUSE: <legal name or NOBODY>`. Labels are read at line starts only, so a statement that quotes
one ("SAY: VOTE: Bob") is text.

The demonstration is a worked turn for the seat's role and the current phase, on a table seated
with the spare names, so a copied example names no real player.

Metrics per episode: `win/village`, `win/werewolves`, `draw`, `days` (the day or night the game
ended on), `vote_accuracy` (village votes cast on werewolves / village votes cast),
`wolf_detection` (share of werewolves among the players the village voted for most on day 1),
`seer_survival`. The run report adds the series `day/vote_accuracy` (step = day), the table
`werewolf/games.json` (winner, days, roles, deaths per game), and per-day vote and accusation
graphs between seats (networkx; edge weight = votes or accusations summed over the run's games),
drawn as `werewolf/{votes,accusations}_graphs.png` and written as edge lists
`werewolf/{votes,accusations}_edges.txt`. `episode_info` holds who was who and every statement,
vote and death.

Scripted players (random, rule-based) are in agents/scripted/werewolf.py.

Modules: `rules` (roles, phases, the config, legal targets), `world` (the AECEnv and the game's
course), `text` (prompts, demonstrations, the reply parser), `report` (metrics and the run report).
"""

from worlds.werewolf.rules import (
    DISCUSSION,
    NAMES,
    NIGHT,
    ROLES,
    SEER,
    UNKNOWN,
    VOTE,
    WEREWOLF,
    WEREWOLF_TEAM,
    WerewolfConfig,
)
from worlds.werewolf.world import env, raw_env

__all__ = [
    "DISCUSSION",
    "NAMES",
    "NIGHT",
    "ROLES",
    "SEER",
    "UNKNOWN",
    "VOTE",
    "WEREWOLF",
    "WEREWOLF_TEAM",
    "WerewolfConfig",
    "env",
    "raw_env",
]
