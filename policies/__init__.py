"""Promotion policies: schema, TOML loading, pure checks, decision rules and rendering.

Modules (only pydantic, jinja2 and the standard library are imported here):

- ``models``: ``PromotionPolicy`` → ``StagePolicy`` (production / staging / rollback) and the rules
- ``loading``: ``load_policy(directory, model_name)`` → ``LoadedPolicy``; ``PolicyError`` in ``errors``
- ``evidence``: the checks' inputs (``Evidence``, ``VersionEvidence``, ``SignatureSchema``, ``TestRun``)
- ``checks``: one pure function per check; ``results``: ``CheckResult``, ``Number``, ``Checklist``
- ``checklist``: ``evaluate``, ``run_check``
- ``decisions``: who may sign off, reject, cancel or re-check, and what each needs (``refusal``,
  ``sign_off_decision``, ``same_person``)
- ``importances``: feature importances from model values or a recorded file
- ``render``: the promoted description and notification messages (jinja2)
- ``status``: ``PromotionStatus``, the life cycle of a promotion request
"""
