"""One signature path, start to finish: path -> episode -> verified positive -> negative(s) -> pairs.

``Distiller.run_path`` is the job ``engine.scheduler.run_jobs`` runs per path; it returns the
records to commit. A path that cannot yield a verified positive raises ``JobFailed`` with the
stage and a one-line reason (the scheduler stores it as a dead letter). A path with a positive
but no negative still commits its positive, plus a dead letter for the negative step, so
every path's outcome is on record.
"""

from __future__ import annotations

import random

from distill import negatives as neg
from distill.generate_config import GenerateConfig
from distill.parsers import parse_message
from distill.prompts import Prompts
from distill.rollout import Rollout, RolloutParams, reference_hint, roll_out
from distill.spend import Spend
from distill.translate import Translator
from distill.verify import ReferenceTurn, data_gates, leaked_hint, replay_reference, verify
from engine.errors import BadAnswer, JobFailed
from engine.records import DeadLetter, Episode, PreferencePair, Record, SignaturePath, Trajectory, Verification
from engine.teacher import Teacher
from graph.toolkit import ToolPool


class Distiller:
    def __init__(self, pool: ToolPool, teacher: Teacher, config: GenerateConfig, prompts: Prompts | None = None, *,
                 student: Teacher | None = None, judge: Teacher | None = None, author: Teacher | None = None):
        self.pool, self.teacher, self.cfg = pool, teacher, config
        self.prompts = prompts or Prompts(config.prompts_dir or None)
        self.student, self.judge = student, judge or teacher
        # The author writes the episodes (queries, reference calls); by default the teacher does. A model
        # acting as its own hinted teacher (`magnet improve`) may be too weak to author them.
        self.translator = Translator(author or teacher, pool, self.prompts, config)
        self.spend = Spend()  # this process's tokens over all paths (dead-lettered ones included)

    def _params(self, instructions: str, seed: int, temperature: float) -> RolloutParams:
        cfg = self.cfg
        text = self.prompts.text(instructions) if instructions else ""
        if instructions == "positive_system" and cfg.few_shot and self.prompts.text("positive_examples").strip():
            # One worked example per hint shape: small teachers copy a form they were shown far better than one described.
            text = f"{text}\n\n{self.prompts.text('positive_examples').strip()}"
        return RolloutParams(mode=cfg.rollout_mode, instructions=text, seed=seed,
                             temperature=temperature, retry_temperature=cfg.retry_temperature, max_tokens=cfg.max_tokens,
                             max_steps=cfg.max_steps_per_turn, answer_retries=cfg.answer_retries, grammar=cfg.rollout_grammar)

    async def _roll(self, model: Teacher, episode: Episode, hints: list[str] | None, params: RolloutParams,
                    prefix: Rollout | None = None, from_turn: int = 0) -> Rollout:
        rollout = await roll_out(model, episode, self.pool, hints, params, parse_message, prefix=prefix, from_turn=from_turn)
        self.spend.absorb(rollout.spend)
        return rollout

    async def run_path(self, path: SignaturePath) -> list[tuple[str, Record]]:
        cfg = self.cfg
        spend = Spend()
        try:
            episode = await self.translator.translate(path, spend)
        finally:
            self.spend.absorb(spend)
        reference = replay_reference(self.pool, episode)
        hints = [reference_hint(t, episode.kind) for t in episode.turns]
        failures = []
        for attempt in range(cfg.rollout_attempts):
            params = self._params("positive_system", cfg.seed + attempt, cfg.temperature if attempt == 0 else cfg.retry_temperature)
            rollout = await self._roll(self.teacher, episode, hints, params)
            spend = spend + rollout.spend
            check = verify(rollout, episode, reference, cfg.failure_phrases)
            if check.ok:
                break
            failures.append(check.errors[0])
        else:
            raise JobFailed(f"not verified after {cfg.rollout_attempts} rollouts: {failures[0]}", stage="verify",
                            attempts=cfg.rollout_attempts)
        positive = self._trajectory(f"{episode.id}-pos", episode, rollout, "positive", self.teacher.name,
                                    "teacher_hinted", check, spend)
        records: list[tuple[str, Record]] = [("paths", path), ("episodes", episode), ("trajectories", positive)]
        mode = cfg.negative_mode
        if mode == "none" or cfg.negatives_per_episode == 0:
            return records
        rejected, why = (await self._mined(episode, reference) if mode == "mined"
                         else await self._perturbed(episode, reference, rollout))
        for k, negative in enumerate(rejected):
            records.append(("trajectories", negative))
            records.append(("pairs", PreferencePair(id=f"{episode.id}-pair-{k}", episode_id=episode.id,
                                                    chosen=positive, rejected=negative)))
        if not rejected:
            records.append(("dead_letters", DeadLetter(id=f"dl-{path.id}-negative", item_id=f"{path.id}#negative",
                                                       stage="negative", error=why)))
        return records

    def _trajectory(self, tid: str, episode: Episode, rollout: Rollout, polarity: str, teacher: str, source: str,
                    check: Verification, spend: Spend, error_types: list[str] | None = None) -> Trajectory:
        return Trajectory(id=tid, episode_id=episode.id, polarity=polarity, tools=rollout.tools,
                          turn_tools=rollout.turn_tools, messages=rollout.messages, teacher=teacher, hints=rollout.hints,
                          source=source, error_types=error_types or [], verification=check, usage=spend.as_dict())

    # -- negatives -------------------------------------------------------------------------

    def _rejected(self, rollout: Rollout, episode: Episode, reference: list[ReferenceTurn]) -> tuple[Verification | None, str]:
        """The verification of a would-be rejected rollout when it is a usable negative: really wrong
        (a check other than the data gates fails) and showing no hint; else None and why not."""
        check = verify(rollout, episode, reference, self.cfg.failure_phrases)
        if leaked_hint(rollout):
            return None, "leaks its hint"
        if not set(check.errors) - set(data_gates(rollout, episode)):
            return None, "verified right"
        return check, ""

    async def _perturbed(self, episode: Episode, reference: list[ReferenceTurn],
                         positive: Rollout) -> tuple[list[Trajectory], str]:
        cfg = self.cfg
        rng = random.Random(f"perturb|{episode.id}|{cfg.seed}")
        rules = sorted(neg.RULES)
        rng.shuffle(rules)
        out: list[Trajectory] = []
        tried = []
        for rule in rules:
            if len(out) >= cfg.negatives_per_episode:
                break
            change = neg.RULES[rule](episode, self.pool, rng)
            if change is None:
                tried.append(f"{rule} not applicable")
                continue
            params = self._params("negative_system", cfg.seed + 300, cfg.temperature)
            rollout = await self._roll(self.teacher, episode, neg.wrong_hints(episode, change), params,
                                       prefix=positive, from_turn=change.turn)
            check, why = self._rejected(rollout, episode, reference)
            if check is None:
                tried.append(f"{rule} {why}")
                continue
            out.append(self._trajectory(f"{episode.id}-neg-{rule}", episode, rollout, "negative", self.teacher.name,
                                        f"perturbed:{rule}", check, rollout.spend, [change.error_type]))
        return out, f"no perturbation gives a negative ({', '.join(sorted(tried))})"

    async def _mined(self, episode: Episode, reference: list[ReferenceTurn]) -> tuple[list[Trajectory], str]:
        cfg, student = self.cfg, self.student
        assert student is not None  # GenerateConfig refuses mined mode without a student
        out: list[Trajectory] = []
        right = judged_right = bad_judge = hinted_right = 0
        for k in range(cfg.student_rollouts):
            if len(out) >= cfg.negatives_per_episode:
                break
            tries = await self._roll(student, episode, None, self._params("", cfg.seed + 100 + k, cfg.retry_temperature))
            if verify(tries, episode, reference, cfg.failure_phrases).ok:
                right += 1
                continue
            spend = Spend()
            prompt = self.prompts.render("judge_errors", turns=neg.judge_turns_text(episode, tries))
            try:
                verdicts = await neg.judge(self.judge, prompt, len(episode.turns), spend=spend,
                                           structured=cfg.structured_outputs, max_tokens=cfg.max_tokens, seed=cfg.seed + k)
            except BadAnswer:
                bad_judge += 1
                continue
            finally:
                self.spend.absorb(spend)
            if not verdicts:
                judged_right += 1
                continue
            hints = neg.misleading_hints(episode, tries, verdicts)
            rejected = await self._roll(student, episode, hints,
                                        self._params("negative_system", cfg.seed + 200 + k, cfg.temperature))
            check, _ = self._rejected(rejected, episode, reference)
            if check is None:
                hinted_right += 1
                continue
            out.append(self._trajectory(f"{episode.id}-neg-mined-{k}", episode, rejected, "negative", student.name,
                                        "student_mined", check, tries.spend + spend + rejected.spend,
                                        sorted({v.error_type for v in verdicts})))
        why = (f"no mined mistake in {cfg.student_rollouts} student rollouts ({right} verified right, "
               f"{judged_right} judged right, {bad_judge} unparsable judge answers, {hinted_right} right despite wrong hints)")
        return out, why
