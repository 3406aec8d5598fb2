"""`POST /agent/runs/{id}/feedback`: a score, a corrected answer, a note, kept with the run.

The feedback is one field of the run's hash, so it lives and expires with the run
(`LUMOS_RUN_TTL_S`); `lumos runs export` turns rated runs into training annotations.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from gateway.errors import APIError
from gateway.routes import (
    RUN_ERRORS,
    Principal,
    _error,
    _metrics,
    _not_found,
    _owned,
    _store,
    _view,
)
from gateway.runs import FeedbackRequest, RunFeedback
from gateway.schemas import RunView
from gateway.store import run_key

router = APIRouter(prefix="/agent", tags=["runs"])

# KEYS: run hash. ARGV: feedback JSON. -> 'stored' | 'missing' | the unfinished status
_STORE_FEEDBACK = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'succeeded' and status ~= 'failed' and status ~= 'cancelled' then return status end
redis.call('HSET', KEYS[1], 'feedback', ARGV[1])
return 'stored'
"""


@router.post(
    "/runs/{run_id}/feedback",
    response_model=RunView,
    responses={409: _error("the run has not finished yet (run_not_finished)"), **RUN_ERRORS},
    summary="Rate a finished run, optionally with the answer it should have given",
)
async def give_feedback(
    run_id: str, body: FeedbackRequest, request: Request, principal: Principal
) -> RunView:
    """Stores the feedback with the run (a later one replaces it) and answers the run with
    it. `lumos runs export --min-score` keeps rated runs as training data; a
    `corrected_answer` that differs from the run's answer keeps the run out."""
    store = _store(request)
    record = await _owned(store, run_id, principal)
    feedback = RunFeedback(**body.model_dump(), given_at=time.time())
    script = store.redis.register_script(_STORE_FEEDBACK)
    state = await script(keys=[run_key(run_id)], args=[feedback.model_dump_json()])
    state = state.decode() if isinstance(state, bytes) else str(state)
    if state == "missing":
        raise _not_found(run_id)
    if state != "stored":
        raise APIError(
            409,
            "run_not_finished",
            f"run {run_id} is still {state}; give feedback once it has finished (wait for it "
            f"with GET /agent/runs/{run_id})",
        )
    metrics = _metrics(request)
    labels = (record.domain, str(record.formulation))
    metrics.feedback_score.labels(*labels).observe(feedback.score)
    if feedback.corrected_answer is not None:
        metrics.feedback_corrections.labels(*labels).inc()
    updated = await _owned(store, run_id, principal)
    return await _view(store, updated)
