"""Scripted werewolf players: baselines that act on the structured observation (never on hidden roles).

`RuleBasedPlayer` plays the textbook lines of each role:

- seer: inspects a living player it knows nothing about; it claims the seer role every day and
  accuses a werewolf it found, else another claimant (who must be lying), else a player it has not
  cleared (drawn once a day), so the village never votes out a player the seer knows is innocent;
- village (villager, doctor): trusts the earliest living seer claimant nobody has disproved and
  votes for whom that claimant accused; a claimant is disproved when the real seer has been
  revealed dead or when it is known to be a werewolf; with no claimant to trust it votes against
  the player with the most unfounded accusations; the doctor protects the trusted claimant;
- werewolves: the first living werewolf in seating order fake-claims the seer role on day 1 and
  accuses a villager; the pack kills and votes out whoever else claims the seer role, and
  otherwise votes together for the fake claimant's target.

Public claims are statements the world marks as seer claims (`seer_claims`), accusations are
the structured target of a statement (`accusations`).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from agora.policy import ActRequest, ActResponse, Policy, PolicyConfig
from worlds.werewolf.rules import DISCUSSION, NIGHT, SEER, UNKNOWN, VOTE, WEREWOLF, WEREWOLF_TEAM

CLAIM = "I am the seer, and my inspection says the player I accuse is a werewolf."
COUNTER_CLAIM = "I am the seer, and the player I accuse is lying about being the seer."
SUSPECT = "I am the seer. I have found no werewolf yet, but the player I accuse is the most suspicious."
FOLLOW = "I believe the seer: I accuse the same player."
SUSPICION = "No seer has spoken, but the player I accuse keeps accusing people without any evidence."
NOTHING = "I have nothing to report yet."


def living(obs) -> list[int]:
    return [int(p) for p in np.flatnonzero(obs["alive"])]


def claimants(obs) -> list[int]:
    """Living players who have claimed the seer role, earliest claim first."""
    claims = obs["seer_claims"]
    return sorted((p for p in living(obs) if claims[p] > 0), key=lambda p: claims[p])


def latest_accusation(obs, player: int) -> int | None:
    """The living player `player` accused most recently (None if none)."""
    n = len(obs["alive"])
    for day in range(int(obs["day"]) - 1, -1, -1):
        target = int(obs["accusations"][day, player])
        if 0 <= target < n and obs["alive"][target]:
            return target
    return None


def most_accused(obs, exclude: set[int]) -> int | None:
    """The living player accused most often today (lowest position on a tie), excluding `exclude`."""
    n = len(obs["alive"])
    today = obs["accusations"][int(obs["day"]) - 1]
    counts = np.bincount([t for t in today if 0 <= t < n and obs["alive"][t] and t not in exclude], minlength=n)
    return int(counts.argmax()) if counts.max() > 0 else None


def unfounded_accusations(obs) -> np.ndarray:
    """Per player: accusations it made that no seer claimant made the same day (a werewolf's habit)."""
    n, claims = len(obs["alive"]), obs["seer_claims"]
    counts = np.zeros(n, dtype=np.int64)
    for today in obs["accusations"][: int(obs["day"])]:
        backed = {int(today[c]) for c in range(n) if claims[c] > 0}
        for p, target in enumerate(today):
            counts[p] += 0 <= target < n and claims[p] == 0 and int(target) not in backed
    return counts


def most_reckless(obs, candidates) -> int | None:
    """The candidate with the most unfounded accusations (lowest position on a tie), if any made one."""
    counts = unfounded_accusations(obs)
    best = max(candidates, key=lambda p: (counts[p], -p), default=None)
    return best if best is not None and counts[best] > 0 else None


class WerewolfPlayer(Policy):
    """Shared plumbing: one decision per request, random draws keyed by the decision.

    Each draw comes from a generator seeded by (policy seed, episode, day, phase, position,
    transcript length), so a game plays the same whichever games run beside it (`concurrency`)
    and in whatever order the engine asks.
    """

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        out = []
        for request in requests:
            self.episode = request.episode
            out.append(ActResponse("", self.decide(request.observation)))
        return out

    def decide(self, obs) -> dict:
        raise NotImplementedError

    def random_target(self, obs, allowed=None) -> int:
        """A uniformly drawn legal target (restricted to `allowed` when some of them are legal)."""
        legal = [int(t) for t in np.flatnonzero(obs["target_mask"])]
        preferred = [t for t in legal if allowed is None or t in allowed]
        key = (self.seed, self.episode, int(obs["day"]), int(obs["phase"]), int(obs["me"]), len(obs["transcript"]))
        return int(np.random.default_rng(key).choice(preferred or legal))


class RandomPlayer(WerewolfPlayer):
    """Uniformly random legal targets (accusing or not in the discussion) and a fixed, empty-handed statement."""

    def decide(self, obs) -> dict:
        statement = NOTHING if int(obs["phase"]) == DISCUSSION else ""
        return {"target": self.random_target(obs), "statement": statement}


class RuleBasedPlayer(WerewolfPlayer):
    """The textbook lines of each role (see the module docstring)."""

    class Config(PolicyConfig):
        seer_claims: bool = Field(
            True, description="the seer claims its role every day and names its suspects (found werewolves first)"
        )
        fake_claims: bool = Field(True, description="the werewolves fake-claim the seer role on day 1")

    def decide(self, obs) -> dict:
        role, phase = int(obs["role"]), int(obs["phase"])
        if role == WEREWOLF:
            target, statement = self.werewolf(obs, phase)
        elif role == SEER:
            target, statement = self.seer(obs, phase)
        else:
            target, statement = self.village(obs, phase)
        n = len(obs["alive"])
        if target is None or not obs["target_mask"][target]:
            target = n if phase == DISCUSSION else self.random_target(obs)
        return {"target": int(target), "statement": statement if phase == DISCUSSION else ""}

    def seer(self, obs, phase: int):
        me, known = int(obs["me"]), obs["known"]
        if phase == NIGHT:
            return self.random_target(obs, {p for p in living(obs) if known[p] == UNKNOWN}), ""
        wolves = [p for p in living(obs) if known[p] == WEREWOLF_TEAM]
        liars = [p for p in claimants(obs) if p != me]
        unknown = [p for p in living(obs) if known[p] == UNKNOWN]
        if wolves:
            target, statement = wolves[0], CLAIM
        elif liars:
            target, statement = liars[0], COUNTER_CLAIM
        else:  # no werewolf found yet: point the vote at a player it has not cleared, and stick to it for the day
            mine = int(obs["accusations"][int(obs["day"]) - 1, me])
            if mine not in unknown:
                mine = most_reckless(obs, unknown)
                mine = self.random_target(obs, set(unknown)) if mine is None else mine
            target, statement = mine, SUSPECT
        if not self.config.seer_claims:
            statement = NOTHING if phase == DISCUSSION else ""
            target = target if phase == VOTE else None
        return target, statement

    def trusted(self, obs) -> int | None:
        """The earliest living seer claimant not disproved (none once the real seer is revealed dead)."""
        if (obs["revealed"] == SEER).any():
            return None
        me = int(obs["me"])
        return next((p for p in claimants(obs) if p != me and obs["known"][p] != WEREWOLF_TEAM), None)

    def village(self, obs, phase: int):
        me, known = int(obs["me"]), obs["known"]
        trusted = self.trusted(obs)
        if phase == NIGHT:  # a doctor: guard the trusted seer, else itself
            return (trusted if trusted is not None else me), ""
        exposed = [p for p in living(obs) if known[p] == WEREWOLF_TEAM]
        if (obs["revealed"] == SEER).any():  # the real seer is dead: every living claimant lied
            exposed += [p for p in claimants(obs) if p != me]
        if exposed:
            return exposed[0], FOLLOW
        if trusted is not None and (target := latest_accusation(obs, trusted)) is not None and target != me:
            return target, FOLLOW
        if trusted is None and (suspect := most_reckless(obs, [p for p in living(obs) if p != me])) is not None:
            return suspect, SUSPICION
        if phase == VOTE:
            n = len(obs["alive"])
            return (n if obs["target_mask"][n] else most_accused(obs, {me})), ""
        return None, NOTHING

    def werewolf(self, obs, phase: int):
        me, known = int(obs["me"]), obs["known"]
        pack = [p for p in living(obs) if known[p] == WEREWOLF_TEAM]
        prey = [p for p in living(obs) if known[p] != WEREWOLF_TEAM]
        threats = [p for p in claimants(obs) if p in prey]  # the real seer, once it claims
        if phase == NIGHT:
            return self.random_target(obs, set(threats) or None), ""
        if threats:
            return threats[0], FOLLOW
        fakers = [p for p in claimants(obs) if p in pack]
        if fakers and (target := latest_accusation(obs, fakers[0])) is not None and target in prey:
            return target, FOLLOW
        if phase == DISCUSSION and self.config.fake_claims and not fakers and me == pack[0] and int(obs["day"]) == 1:
            return self.random_target(obs, set(prey)), CLAIM
        if phase == VOTE:
            target = most_accused(obs, set(pack))
            return (prey[0] if target is None else target), ""
        return None, NOTHING
