"""PromotionWorkflow: checklist as durable activities, human sign-off, then the governed apply.

Orchestration only: every decision about the registry or the policy is made inside an
activity (or by a pure ``policies`` function on workflow state), so a policy change never
breaks the replay of a running promotion.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from policies.decisions import Action, Approval, PromotionFacts, refusal, sign_off_decision
    from policies.evidence import TestRun
    from policies.models import SignOffRule
    from policies.results import Checklist, CheckResult
    from policies.status import PromotionStatus
    from workflows.failures import activity_cause, activity_error_type, failed_checks
    from workflows.model_evidence import EVIDENCE_HEARTBEAT_TIMEOUT, EVIDENCE_RETRY, EVIDENCE_TIMEOUT
    from workflows.models import (
        ApplyInput,
        CheckInput,
        Decision,
        EvidenceSnapshot,
        ModelEvidenceInput,
        NotifyInput,
        PromotionInput,
        PromotionOutcome,
        PromotionState,
        RecordStateInput,
        SignOffRecord,
        StateChange,
        StopReason,
        TestsInput,
        check_result_failed,
        heavy_task_queue,
    )

__all__ = ["PromotionWorkflow"]

ACTIVITY_TIMEOUT = timedelta(seconds=15)
"""Light activities (a few DB writes or a pure evaluation): a killed worker's attempt is retried within this."""
SNAPSHOT_TIMEOUT = timedelta(seconds=60)
"""Before the ``heavy-queue`` patch the evidence snapshot may load the model in the sandbox (up to its own 30 s
budget); it does not heartbeat. Since, it only reads the stored model evidence: ``ACTIVITY_TIMEOUT``."""
TESTS_HEARTBEAT_TIMEOUT = timedelta(seconds=10)
"""``run_tests`` heartbeats every 2 s: a lost worker's test run is retried elsewhere within this."""
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=[
        "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "PERMISSION_DENIED", "ABORTED", "INVALID_STATE",
        "PolicyError",
    ],
)
MAX_APPLY_ATTEMPTS = 3
EVIDENCE_BINDING = "evidence-binding"
"""Patch: a sign-off counts only while the candidate's evidence is what the checks ran on."""
EVIDENCE_NOTICE = "evidence-notice"
"""Patch: the ``evidence_may_have_changed`` signal wakes the sign-off wait to re-verify the evidence at once."""
CHECK_ERROR = "check-error"
"""Patch: a check step that could not run (after its retries) pauses the promotion in ``check_error``, no verdict."""
HEAVY_QUEUE = "heavy-queue"
"""Patch: the candidate's model evidence is computed (once per artifact) on the heavy queue before the
snapshot, which then only reads it; ``run_tests`` runs on the heavy queue too."""
RECHECK_RECORDED = "recheck-recorded"
"""Patch: a re-check is answered once the read model says ``running_checks`` (reads agree with the decision)."""
GROUP_QUORUM = "group-quorum"
"""Patch: sign-offs are counted by ``sign_off_decision`` with the signers' groups (a quorum per group, one slot
per person) and without the run's author; before it, a plain count of ``needed`` distinct signers."""
DECISIONS_RECORDED = "decisions-recorded"
"""Patch: a sign-off, rejection or cancellation is answered once the read model shows it (the sign-off recorded,
the promotion closed); after a recorded stop the main loop writes no other status and goes on to finish."""
DEFAULT_RECHECK_WINDOW = timedelta(days=7)


@workflow.defn
class PromotionWorkflow:
    """One promotion request from checks to Production (or to rejection, expiry, cancellation)."""

    def __init__(self) -> None:
        self._state: PromotionState | None = None
        self._published: PromotionState | None = None
        self._check_error: str | None = None
        self._snapshot: EvidenceSnapshot | None = None
        self._recorded_approvals = 0
        self._recheck = False
        self._voided = False
        self._evidence_news = False
        self._stop_claimed = False  # patch decisions-recorded: a decision's handler is writing the stop
        self._stop_written = False
        self._sign_offs_lock = asyncio.Lock()  # the handlers and the main loop record each sign-off once
        self._stop_lock = asyncio.Lock()

    # ------------------------------------------------------------------ run

    @workflow.run
    async def run(self, request: PromotionInput) -> PromotionOutcome:
        """Check, wait for sign-off, apply, notify."""
        self._state = PromotionState(
            promotion_id=request.promotion_id, model=request.model, version=request.version,
            target_stage=request.target_stage, kind=request.kind, requester=request.requester,
            status=PromotionStatus.RUNNING_CHECKS,
        )
        await self._enter(PromotionStatus.RUNNING_CHECKS, "checks started")
        await self._notify("requested")
        while True:
            if not await self._checks_pass(request):
                if self._stop_claimed:  # stopped (and recorded) while the checks ran
                    return await self._finish()
                self._recheck = False  # a re-check may arrive while the failure is being announced
                status = PromotionStatus.CHECK_ERROR if self._check_error else PromotionStatus.CHECKS_FAILED
                summary = self._check_error or failed_checks(self._current.checklist)
                self._state = self._current.model_copy(update={"message": summary})
                await self._enter(status, summary)
                await self._notify(status.value)
                if not await self._wait_for_recheck():
                    return await self._finish()
                await self._record()
                continue
            if self._current.stop is not None:
                return await self._finish()
            if self._current.sign_off is not None and not await self._collect_sign_offs():
                return await self._finish()
            if self._voided:  # the evidence changed under the sign-offs: check again
                continue
            outcome = await self._apply(request)
            if outcome is not None:
                return outcome

    # ------------------------------------------------------------------ messages

    @workflow.query
    def state(self) -> PromotionState:
        """The state last written to the read model (a fallback read: it never runs ahead of the registry's row)."""
        return self._published or self._current

    @workflow.signal
    def evidence_may_have_changed(self) -> None:
        """The registry changed something a candidate's evidence is made of: re-verify it while awaiting sign-off."""
        self._evidence_news = True

    @workflow.update
    async def sign_off(self, decision: Decision) -> PromotionState:
        """An approver signs off (validated before it reaches history); since patch ``decisions-recorded``
        answered once the sign-off is recorded in the read model."""
        self._state = self._current.model_copy(update={"approvals": [
            *self._current.approvals, Approval(user=decision.user, roles=decision.roles, groups=decision.groups,
                                             comment=decision.comment, at=workflow.now()),
        ]})
        if workflow.patched(DECISIONS_RECORDED):
            await self._record_new_sign_offs()
        return self._current

    @sign_off.validator
    def _validate_sign_off(self, decision: Decision) -> None:
        self._refuse(Action.SIGN_OFF, decision)

    @workflow.update
    async def reject(self, decision: Decision) -> PromotionState:
        """An approver rejects the promotion with a reason (answered once recorded: ``_decide_stop``)."""
        await self._decide_stop(StopReason(status=PromotionStatus.REJECTED, by=decision.user,
                                           reason=decision.comment.strip()))
        return self._current

    @reject.validator
    def _validate_reject(self, decision: Decision) -> None:
        self._refuse(Action.REJECT, decision)

    @workflow.update
    async def cancel(self, decision: Decision) -> PromotionState:
        """The requester (or an admin) withdraws the promotion (answered once recorded: ``_decide_stop``)."""
        await self._decide_stop(StopReason(status=PromotionStatus.CANCELLED, by=decision.user,
                                           reason=decision.comment.strip()))
        return self._current

    @cancel.validator
    def _validate_cancel(self, decision: Decision) -> None:
        self._refuse(Action.CANCEL, decision)

    @workflow.update
    async def recheck(self, decision: Decision) -> PromotionState:
        """The requester asks for the checks to run again (after fixing, e.g., the description).

        Since patch ``recheck-recorded`` the answer comes once the read model says ``running_checks``:
        a read right after the re-check never shows the failure it replaces.
        """
        self._state = self._current.model_copy(update={
            "status": PromotionStatus.RUNNING_CHECKS, "message": "",
            "history": [*self._current.history, StateChange(
                at=workflow.now(), status=PromotionStatus.RUNNING_CHECKS, note=f"re-check requested by {decision.user}",
            )],
        })
        if workflow.patched(RECHECK_RECORDED):
            await self._record()
        self._recheck = True
        return self._current

    @recheck.validator
    def _validate_recheck(self, decision: Decision) -> None:
        self._refuse(Action.RECHECK, decision)

    async def _decide_stop(self, stop: StopReason) -> None:
        """Stop the promotion; since patch ``decisions-recorded`` also close its row before answering."""
        self._stop_with(stop)
        if workflow.patched(DECISIONS_RECORDED):
            self._stop_claimed = True
            await self._write_stop()

    def _refuse(self, action: Action, decision: Decision) -> None:
        """Refuse a decision the rules of ``policies.decisions`` do not allow now (typed by its error code)."""
        state = self._current
        facts = PromotionFacts(
            status=state.stop.status if state.stop is not None else state.status, requester=state.requester,
            run_author=state.run_author, sign_off=state.sign_off, signers=list(state.approvals),
        )
        refused = refusal(action, user=decision.user, roles=decision.roles, groups=decision.groups, promotion=facts,
                          comment=decision.comment)
        if refused is not None:
            raise ApplicationError(refused.message, type=refused.kind.value, non_retryable=True)

    # ------------------------------------------------------------------ steps

    @property
    def _current(self) -> PromotionState:
        """The current state (set as soon as the run starts)."""
        assert self._state is not None
        return self._state

    async def _checks_pass(self, request: PromotionInput) -> bool:
        """Snapshot and run the checks; False when one failed or (``_check_error`` set) could not be evaluated."""
        self._voided = False
        self._evidence_news = False  # the snapshot below reads what any earlier news was about
        self._check_error = None
        try:
            await self._compute_model_evidence(request)
            self._snapshot = await workflow.execute_activity(
                "snapshot_evidence", request, result_type=EvidenceSnapshot,  # light once the evidence is stored
                start_to_close_timeout=ACTIVITY_TIMEOUT if self._heavy_queue() else SNAPSHOT_TIMEOUT,
                retry_policy=RETRY,
            )
        except ActivityError as exc:
            if not workflow.patched(CHECK_ERROR):
                raise
            self._check_error = f"the evidence snapshot could not be taken: {activity_cause(exc)}"
            return False
        rule = self._snapshot.policy.required_sign_off()
        results = await asyncio.gather(*(self._run_check(name) for name in self._snapshot.checks))
        checklist = Checklist.of(list(results), policy_hash=self._snapshot.policy_hash)
        self._state = self._current.model_copy(update={
            "checklist": checklist, "policy_hash": self._snapshot.policy_hash,
            "incumbent_version": self._snapshot.incumbent_version, "sign_off": rule,
            "run_author": self._snapshot.run_author, "risk_tier": self._snapshot.risk_tier,
            "required_approvals": rule.needed if rule else 0,
            "approver_role": rule.role if rule else "approver",
        })
        return checklist.passed

    async def _run_check(self, name: str) -> CheckResult:
        snapshot = self._snapshot
        assert snapshot is not None
        test_run: TestRun | None = None
        if name == "tests" and snapshot.policy.tests is not None and snapshot.policy.tests.mode == "command":
            try:
                test_run = await workflow.execute_activity(
                    "run_tests",
                    TestsInput(promotion_id=self._current.promotion_id, storage_location=snapshot.storage_location,
                               rule=snapshot.policy.tests, digest=snapshot.evidence.candidate.digest),
                    result_type=TestRun, start_to_close_timeout=timedelta(seconds=snapshot.policy.tests.timeout_s + 60),
                    heartbeat_timeout=TESTS_HEARTBEAT_TIMEOUT, retry_policy=RetryPolicy(maximum_attempts=2),
                    task_queue=self._heavy_queue(),
                )
            except ActivityError as exc:
                return self._not_evaluated(name, f"the test run could not complete: {activity_cause(exc)}")
        try:
            result: CheckResult = await workflow.execute_activity(
                "evaluate_check", CheckInput(name=name, snapshot=snapshot, test_run=test_run),
                result_type=CheckResult, start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=RETRY,
            )
        except ActivityError as exc:
            if not workflow.patched(CHECK_ERROR):
                raise
            return self._not_evaluated(name, f"the {name} check could not be evaluated: {activity_cause(exc)}")
        return result

    def _not_evaluated(self, name: str, cause: str) -> CheckResult:
        """A check that could not run: listed as not passed and (patch ``check-error``) a check error, not a verdict."""
        if workflow.patched(CHECK_ERROR):
            self._check_error = f"{self._check_error}; {cause}" if self._check_error else cause
        return check_result_failed(name, cause)

    async def _compute_model_evidence(self, request: PromotionInput) -> None:
        """Make sure the candidate's model evidence is stored (usually it was, at registration), on the heavy queue.

        A model that cannot be loaded (``MODEL_UNLOADABLE``), or a load that still fails after its
        retries, raises: the checks could not run (``check_error``), which is never a verdict about the model.
        """
        queue = self._heavy_queue()
        if queue is None:
            return
        await workflow.execute_activity(
            "compute_model_evidence", ModelEvidenceInput(model=request.model, version=request.version),
            result_type=str, task_queue=queue, start_to_close_timeout=EVIDENCE_TIMEOUT,
            heartbeat_timeout=EVIDENCE_HEARTBEAT_TIMEOUT, retry_policy=EVIDENCE_RETRY,
        )

    def _heavy_queue(self) -> str | None:
        """The heavy activities' queue (patch ``heavy-queue``); None: the workflow's own, as before the patch."""
        return heavy_task_queue(workflow.info().task_queue) if workflow.patched(HEAVY_QUEUE) else None

    async def _wait_for_recheck(self) -> bool:
        rule = self._current.sign_off
        window = rule.expires_after if rule else DEFAULT_RECHECK_WINDOW
        deadline = workflow.now() + window
        self._state = self._current.model_copy(update={"deadline": deadline})
        await self._record()
        try:
            await workflow.wait_condition(lambda: self._recheck or self._current.stop is not None, timeout=window,
                                          timeout_summary="waiting for a re-check")
        except TimeoutError:
            self._stop_with(StopReason(status=PromotionStatus.EXPIRED, reason="no re-check before the deadline"))
        return self._current.stop is None

    async def _collect_sign_offs(self) -> bool:
        rule = self._current.sign_off
        assert rule is not None
        deadline = workflow.now() + rule.expires_after
        self._state = self._current.model_copy(update={"deadline": deadline})
        await self._enter(PromotionStatus.AWAITING_SIGN_OFF, f"awaiting {rule.needed} sign-off(s)")
        await self._notify("awaiting")
        next_reminder = workflow.now() + rule.reminder_every
        notice = workflow.patched(EVIDENCE_NOTICE)  # runs started before the signal existed ignore it (replay)
        while True:
            await self._record_new_sign_offs()
            seen = len(self._current.approvals)  # acted on below (a handler may have recorded later ones too)
            if self._current.stop is not None:
                return False
            # A sign-off counts only for the evidence the checks ran on; re-verified on each reminder and,
            # at once, when the registry signals a change (the reminder and the apply remain the backstop).
            news, self._evidence_news = notice and self._evidence_news, False
            stale = bool(self._current.approvals) or workflow.now() >= next_reminder or news
            if stale and workflow.patched(EVIDENCE_BINDING) and not await self._evidence_unchanged():
                return self._current.stop is None
            if self._stop_claimed:  # stopped (and recorded) while the evidence was verified
                return False
            if self._signed_off(rule):
                return True
            now = workflow.now()
            if now >= deadline:
                self._stop_with(StopReason(status=PromotionStatus.EXPIRED,
                                           reason=f"not signed off before {deadline.isoformat()}"))
                return False
            if now >= next_reminder:
                self._state = self._current.model_copy(update={"reminders_sent": self._current.reminders_sent + 1})
                await self._notify("reminder")
                await self._record()
                next_reminder = now + rule.reminder_every
            try:
                await workflow.wait_condition(
                    self._news_since(seen, evidence=notice),
                    timeout=min(next_reminder, deadline) - now, timeout_summary="waiting for sign-off",
                )
            except TimeoutError:
                pass

    def _signed_off(self, rule: SignOffRule) -> bool:
        """Whether the approvals so far satisfy ``rule`` (patch ``group-quorum``: by group, never the run's author).

        Without the patch (runs started before it) ``needed`` distinct signers suffice: for every rule
        recorded before groups existed that is the count those runs were made with.
        """
        state = self._current
        if workflow.patched(GROUP_QUORUM):
            return sign_off_decision(rule, requester=state.requester, approvals=state.approvals,
                                     run_author=state.run_author).satisfied
        plain = SignOffRule(approvers=rule.needed, role=rule.role, exclude_requester=rule.exclude_requester,
                            exclude_run_author=False)
        return sign_off_decision(plain, requester=state.requester, approvals=state.approvals).satisfied

    async def _evidence_unchanged(self) -> bool:
        """Whether the candidate's evidence is what the checks ran on; if not, the sign-offs are voided."""
        changed: list[str] = await workflow.execute_activity(
            "verify_evidence", self._current.promotion_id, result_type=list[str],
            start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=RETRY,
        )
        if changed == ["candidate"]:
            self._stop_with(StopReason(status=PromotionStatus.FAILED, reason=(
                f"{self._current.model} version {self._current.version} is no longer the version this promotion "
                "was requested for")))
        elif changed:
            await self._void_sign_offs(", ".join(changed))
        return not changed

    async def _void_sign_offs(self, what: str) -> None:
        """Drop the sign-offs so far, tell requester and approvers why; the main loop re-runs the checks."""
        async with self._sign_offs_lock:  # not while a handler records a sign-off this would drop
            voided = ", ".join(a.user for a in self._current.approvals)
            note = (f"the candidate's evidence changed after the checks ran ({what}); "
                    f"sign-offs voided{f' ({voided})' if voided else ''}; re-running the checks")
            self._voided = True
            self._recorded_approvals = 0
            self._state = self._current.model_copy(update={"approvals": [], "message": note})
        await self._enter(PromotionStatus.RUNNING_CHECKS, note)
        await self._notify("evidence_changed")

    def _news_since(self, seen: int, *, evidence: bool) -> Callable[[], bool]:
        """A wait condition: a new sign-off arrived, the promotion was stopped or (``evidence``) the evidence news."""
        return lambda: (len(self._current.approvals) > seen or self._current.stop is not None
                        or (evidence and self._evidence_news))

    async def _record_new_sign_offs(self) -> None:
        """Record the sign-offs not recorded yet, in order, each once (a handler and the main loop may both ask)."""
        async with self._sign_offs_lock:
            while self._recorded_approvals < len(self._current.approvals):
                approval = self._current.approvals[self._recorded_approvals]
                await workflow.execute_activity(
                    "record_sign_off",
                    SignOffRecord(promotion_id=self._current.promotion_id, approval=approval,
                                  approvals=self._current.approvals[: self._recorded_approvals + 1]),
                    start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=RETRY,
                )
                self._recorded_approvals += 1
                if self._published is not None:
                    self._published = self._published.model_copy(
                        update={"approvals": self._current.approvals[: self._recorded_approvals]})

    async def _apply(self, request: PromotionInput) -> PromotionOutcome | None:
        """Apply; on stale evidence re-run the checks (None: go round the main loop again)."""
        await self._enter(PromotionStatus.APPLYING, "applying")
        for _ in range(MAX_APPLY_ATTEMPTS):
            snapshot = self._snapshot
            assert snapshot is not None
            try:
                await workflow.execute_activity(
                    "apply_promotion",
                    ApplyInput(promotion_id=self._current.promotion_id, expected_incumbent=snapshot.incumbent_version,
                               approvers=[a.user for a in self._current.approvals], validated_on=workflow.now(),
                               checklist=self._current.checklist),
                    start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=RETRY,
                )
            except ActivityError as exc:
                if activity_error_type(exc) == "INVALID_STATE":  # refused: not the candidate or evidence the checks saw
                    if await self._evidence_unchanged():  # changed back meanwhile: the sign-offs are still void
                        await self._void_sign_offs(activity_cause(exc))
                    return await self._finish() if self._current.stop is not None else None
                if activity_error_type(exc) != "ABORTED":
                    self._stop_with(StopReason(status=PromotionStatus.FAILED,
                                               reason=f"apply failed: {activity_cause(exc)}"))
                    return await self._finish()
                await self._enter(PromotionStatus.RUNNING_CHECKS, "Production changed; re-running the comparison")
                if not await self._checks_pass(request):
                    return None
                await self._enter(PromotionStatus.APPLYING, "applying after re-check")
                continue
            self._stop_with(StopReason(status=PromotionStatus.PROMOTED,
                                       reason=f"{request.model} v{request.version} is now {request.target_stage}"))
            return await self._finish()
        self._stop_with(StopReason(status=PromotionStatus.FAILED, reason="Production kept changing; giving up"))
        return await self._finish()

    def _stop_with(self, stop: StopReason) -> None:
        """Stop the promotion: the main loop finishes it with this status and reason (a recorded stop stays)."""
        if self._stop_claimed and self._current.stop is not None:
            return
        self._state = self._current.model_copy(update={"stop": stop})

    async def _finish(self) -> PromotionOutcome:
        stop = self._current.stop
        assert stop is not None
        await self._write_stop()
        await self._notify(stop.status.value)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return PromotionOutcome(status=stop.status, message=stop.summary)

    async def _write_stop(self) -> None:
        """Record the sign-offs so far and the stop (status, message, history) in the read model, once."""
        async with self._stop_lock:
            if self._stop_written:
                return
            await self._record_new_sign_offs()
            stop = self._current.stop
            assert stop is not None
            self._state = self._current.model_copy(update={
                "message": stop.summary, "status": stop.status,
                "history": [*self._current.history, StateChange(at=workflow.now(), status=stop.status,
                                                                note=stop.summary)],
            })
            await self._record(stopping=True)
            self._stop_written = True

    async def _enter(self, status: PromotionStatus, note: str) -> None:
        self._state = self._current.model_copy(update={
            "status": status,
            "history": [*self._current.history, StateChange(at=workflow.now(), status=status, note=note)],
        })
        await self._record()

    async def _record(self, *, stopping: bool = False) -> None:
        """Write the current state to the read model; once written it is what the ``state`` query answers.

        Once a decision's handler is closing the row (patch ``decisions-recorded``) only that stop is written.
        """
        if self._stop_claimed and not stopping:
            return
        state = self._current
        await workflow.execute_activity(
            "record_state", RecordStateInput(state=state), start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=RETRY,
        )
        self._published = state

    async def _notify(self, kind: str) -> None:
        """Best effort: a notification that cannot be delivered never blocks the promotion."""
        try:
            await workflow.execute_activity(
                "notify", NotifyInput(kind=kind, state=self._current),
                start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError as exc:
            workflow.logger.warning("notification %s for %s failed: %s", kind, self._current.promotion_id,
                                    activity_cause(exc))
