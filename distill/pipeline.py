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
from distill.rollout import Rollout, reference_hint, roll_out
from distill.structured import Spend
from distill.translate import Translator
from distill.verify import ReferenceTurn, replay_reference, verify
from engine.errors import BadAnswer, JobFailed
from engine.records import DeadLetter, Episode, PreferencePair, Record, SignaturePath, Trajectory, Verification
from engine.teacher import Teacher
from graph.toolkit import ToolPool


class Distiller:
    def __init__(self, pool: ToolPool, teacher: Teacher, config: GenerateConfig, prompts: Prompts | None = None, *,
                 student: Teacher | None = None, judge: Teacher | None = None):
        self.pool, self.teacher, self.cfg = pool, teacher, config
        self.prompts = prompts or Prompts(config.prompts_dir or None)
        self.student, self.judge = student, judge or teacher
        self.translator = Translator(teacher, pool, self.prompts, config)
        self.spend = Spend()  # this process's tokens over all paths (dead-lettered ones included)

    async def _roll(self, model: Teacher, episode: Episode, hints: list[str | None] | None, system: str, seed: int,
                    temperature: float) -> Rollout:
        cfg = self.cfg
        rollout = await roll_out(
            model, episode, self.pool, system_prompt=self.prompts.text("system"),
            hint_instructions=self.prompts.text(system) if system else "", hints=hints, parse=parse_message,
            seed=seed, temperature=temperature, max_tokens=cfg.max_tokens, max_steps=cfg.max_steps_per_turn,
            answer_retries=cfg.answer_retries, retry_temperature=cfg.retry_temperature)
        self._add(rollout.spend)
        return rollout

    def _add(self, spend: Spend) -> None:
        self.spend.prompt_tokens += spend.prompt_tokens
        self.spend.completion_tokens += spend.completion_tokens
        self.spend.calls += spend.calls

    async def run_path(self, path: SignaturePath) -> list[tuple[str, Record]]:
        cfg = self.cfg
        spend = Spend()
        try:
            episode = await self.translator.translate(path, spend)
        finally:
            self._add(spend)
        reference = replay_reference(self.pool, episode)
        hints: list[str | None] = [reference_hint(t) for t in episode.turns]
        failures = []
        for attempt in range(cfg.rollout_attempts):
            rollout = await self._roll(self.teacher, episode, hints, "positive_system", cfg.seed + attempt,
                                       cfg.temperature if attempt == 0 else cfg.retry_temperature)
            spend.prompt_tokens += rollout.spend.prompt_tokens
            spend.completion_tokens += rollout.spend.completion_tokens
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
        rejected, why = (await self._mined(episode, reference, hints) if mode == "mined"
                         else self._perturbed(episode, reference, positive, rollout))
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
        return Trajectory(id=tid, episode_id=episode.id, polarity=polarity, tools=rollout.tools, messages=rollout.messages,
                          teacher=teacher, hints=rollout.hints, source=source, error_types=error_types or [],
                          verification=check, usage=spend.as_dict())

    # -- negatives -------------------------------------------------------------------------

    def _perturbed(self, episode: Episode, reference: list[ReferenceTurn], positive: Trajectory,
                   rollout: Rollout) -> tuple[list[Trajectory], str]:
        rng = random.Random(f"perturb|{episode.id}|{self.cfg.seed}")
        rules = sorted(neg.RULES)
        rng.shuffle(rules)
        out: list[Trajectory] = []
        tried = []
        for rule in rules:
            if len(out) >= self.cfg.negatives_per_episode:
                break
            fn, error_type = neg.RULES[rule]
            change = fn(episode, self.pool, rng)
            if change is None:
                tried.append(f"{rule} not applicable")
                continue
            messages, logs = neg.replay_with(positive, rollout, episode, self.pool, *change)
            replay = Rollout(messages=messages, tools=positive.tools, hints=[], turns=logs, spend=Spend())
            check = verify(replay, episode, reference, self.cfg.failure_phrases)
            if check.ok:  # the change made no observable difference: not a negative
                tried.append(f"{rule} had no effect")
                continue
            out.append(self._trajectory(f"{episode.id}-neg-{rule}", episode, replay, "negative", positive.teacher,
                                        f"perturbed:{rule}", check, Spend(), [error_type]))
        return out, f"no perturbation applies ({', '.join(sorted(tried))})"

    async def _mined(self, episode: Episode, reference: list[ReferenceTurn],
                     ref_hints: list[str | None]) -> tuple[list[Trajectory], str]:
        cfg, student = self.cfg, self.student
        assert student is not None  # GenerateConfig refuses mined mode without a student
        out: list[Trajectory] = []
        right = judged_right = bad_judge = hinted_right = 0
        for k in range(cfg.student_rollouts):
            if len(out) >= cfg.negatives_per_episode:
                break
            tries = await self._roll(student, episode, None, "", cfg.seed + 100 + k, cfg.retry_temperature)
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
                self._add(spend)
            if not verdicts:
                judged_right += 1
                continue
            hints = neg.misleading_hints(episode, tries, verdicts)
            rejected = await self._roll(student, episode, hints, "negative_system", cfg.seed + 200 + k, cfg.temperature)
            check = verify(rejected, episode, reference, cfg.failure_phrases)
            if check.ok:
                hinted_right += 1
                continue
            total = Spend(prompt_tokens=tries.spend.prompt_tokens + spend.prompt_tokens + rejected.spend.prompt_tokens,
                          completion_tokens=tries.spend.completion_tokens + spend.completion_tokens + rejected.spend.completion_tokens)
            out.append(self._trajectory(f"{episode.id}-neg-mined-{k}", episode, rejected, "negative", student.name,
                                        "student_mined", check, total, sorted({v.error_type for v in verdicts})))
        why = (f"no mined mistake in {cfg.student_rollouts} student rollouts ({right} verified right, "
               f"{judged_right} judged right, {bad_judge} unparsable judge answers, {hinted_right} right despite wrong hints)")
        return out, why
