"""The checkpoint under improvement as a teacher: one vLLM server per checkpoint, shared by the stages.

Probe, generation (the model as its own hinted teacher and as the student whose mistakes are
mined) and evaluation of one checkpoint all talk to one managed server instead of starting one
per stage (a start costs 30-90 s on CPU). Every stage names the model by its stable spec
(``vllm:DIR``, ``hf:DIR``), so a resumed stage has the fingerprint of the first try whatever
port the new server got. With ``hf`` the model runs in-process (small test models).

With `magnet improve --ray` no server runs here: each Ray actor of a stage builds the model from
its spec with ``teacher_overrides()`` (and so starts its own server on its GPU).
"""

from __future__ import annotations

from typing import Any

from engine.teacher import Teacher

# A client of our own vLLM server: a slow CPU answer is not a dead teacher.
VLLM_CLIENT: dict[str, Any] = {"timeout_s": 900.0}


class Served:
    def __init__(self, serve: str, options: dict[str, Any]):
        from distill.eval_paths import VLLM_DEFAULT_OPTIONS

        self.serve = serve
        self.options = (dict(VLLM_DEFAULT_OPTIONS) if serve == "vllm" else {}) | options
        self.checkpoint: str | None = None
        self.server: Any = None  # engine.teachers.vllm_server.VLLMServer while one runs

    def spec(self, checkpoint: str) -> str:
        return f"{self.serve}:{checkpoint}"

    def teacher_overrides(self) -> dict[str, Any]:
        """``make_teacher`` overrides that build from the spec alone what ``builder`` hands in, for a Ray actor."""
        return {"options": self.options} | (VLLM_CLIENT if self.serve == "vllm" else {})

    def builder(self, checkpoint: str, *, fallback_options: dict[str, Any] | None = None, **client: Any):
        """``build(spec) -> Teacher``: the served checkpoint for its spec, make_teacher for any other spec.
        Call it outside an event loop: it starts the checkpoint's server (the stage then runs in its own loop)."""
        from engine.teachers import make_teacher

        mine = self.spec(checkpoint)
        if self.serve == "vllm":
            self._start(checkpoint)

        def build(spec: str) -> Teacher:
            if spec != mine:
                return make_teacher(spec, **(fallback_options or {}))
            if self.serve == "hf":
                return make_teacher(mine, options=self.options)
            return self._client(checkpoint, mine, client)

        return build

    def _start(self, checkpoint: str) -> None:
        from engine.scheduler import run
        from engine.teachers.vllm_server import VLLMServer, resolve_model

        if self.checkpoint == checkpoint and self.server.proc is not None and self.server.proc.poll() is None:
            return
        self.stop()
        model, served, template = resolve_model(checkpoint)
        server = VLLMServer(model, **({"served_model_name": served, "chat_template": template} | self.options))
        run(server.start())  # the server outlives this loop: a subprocess, polled over HTTP
        self.server, self.checkpoint = server, checkpoint

    def _client(self, checkpoint: str, name: str, client: dict[str, Any]) -> Teacher:
        assert self.checkpoint == checkpoint, "builder() starts the server of the checkpoint it builds for"
        return self.server.client(name, **(VLLM_CLIENT | client))

    def stop(self) -> None:
        """Stop the server (before training, which wants the CPU; or to serve another checkpoint)."""
        from engine.scheduler import run

        server, self.server, self.checkpoint = self.server, None, None
        if server is not None:
            run(server.stop())
