"""Policy files: the packaged default, per-model overrides, and broken files refused at load."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from policies import loading
from policies.checklist import configured_checks
from policies.durations import format_duration, parse_duration
from policies.errors import PolicyError
from policies.loading import PACKAGED_DEFAULT, default_policy_text, load_policy, policy_hash


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_packaged_default_implements_the_seed_checklist(tmp_path: Path) -> None:
    loaded = load_policy(tmp_path, "churn")
    production = loaded.policy.production

    assert loaded.sources == [PACKAGED_DEFAULT]
    assert configured_checks(production) == ["tests", "metrics", "signature", "leakage", "description"]
    assert production.tests is not None and production.tests.attestation_tag == "ci.tests_passed"
    assert production.metrics is not None
    assert (production.metrics.primary, production.metrics.direction, production.metrics.min_improvement) == (
        "auc",
        "maximize",
        0.0,
    )
    assert [(g.metric, g.direction, g.tolerance) for g in production.metrics.guardrails] == [
        ("log_loss", "minimize", 0.02)
    ]
    assert production.metrics.absolute_thresholds == {"auc": 0.7}
    assert production.leakage is not None and production.leakage.max_feature_share == 0.5
    assert production.description is not None and production.description.required_metrics == ["auc"]
    assert production.sign_off is not None
    assert (production.sign_off.approvers, production.sign_off.reminder_every, production.sign_off.expires_after) == (
        1,
        timedelta(days=1),
        timedelta(days=7),
    )
    assert configured_checks(loaded.policy.staging) == ["tests", "signature"]
    assert loaded.policy.staging.sign_off is None
    assert configured_checks(loaded.policy.rollback) == []
    assert loaded.policy.rollback.approvers_needed == 1


def test_directory_default_is_used_and_hashed(tmp_path: Path) -> None:
    packaged = load_policy(tmp_path, "churn")
    path = write(tmp_path, "default.toml", default_policy_text())

    loaded = load_policy(tmp_path, "churn")

    assert loaded.sources == [str(path)]
    assert loaded.policy == packaged.policy
    assert loaded.content_hash == packaged.content_hash == policy_hash(loaded.policy)
    assert len(loaded.content_hash) == 64


def test_default_text_is_the_file_in_the_package() -> None:
    assert default_policy_text() == (Path(loading.__file__).parent / "default.toml").read_text(encoding="utf-8")


def test_override_deep_merges_into_the_default(tmp_path: Path) -> None:
    override = write(
        tmp_path,
        "models/churn.toml",
        """
        [production.metrics]
        primary = "rmse"
        direction = "minimize"
        min_improvement = 0.01
        guardrails = []
        absolute_thresholds = { rmse = 0.4 }

        [production.leakage]
        enabled = false

        [production.sign_off]
        approvers = 2
        role = "ds-lead"

        [staging.sign_off]
        approvers = 1
        """,
    )

    loaded = load_policy(tmp_path, "churn")
    production = loaded.policy.production

    assert loaded.sources == [PACKAGED_DEFAULT, str(override)]
    assert production.metrics is not None
    assert production.metrics.primary == "rmse"
    assert production.metrics.guardrails == []
    assert production.metrics.absolute_thresholds == {"rmse": 0.4}  # replaced, not merged with auc
    assert production.sign_off is not None
    assert (production.sign_off.approvers, production.sign_off.role) == (2, "ds-lead")
    assert production.sign_off.expires_after == timedelta(days=7)  # kept from the default
    assert configured_checks(production) == ["tests", "metrics", "signature", "description"]
    assert loaded.policy.staging.approvers_needed == 1
    assert loaded.content_hash != load_policy(tmp_path, "other-model").content_hash


def test_override_applies_only_to_its_model(tmp_path: Path) -> None:
    write(tmp_path, "models/churn.toml", "[production.sign_off]\napprovers = 3\n")

    assert load_policy(tmp_path, "churn").policy.production.approvers_needed == 3
    assert load_policy(tmp_path, "fraud").policy.production.approvers_needed == 1


@pytest.mark.parametrize("name", ["../default", "models/../churn", "/etc/passwd", ""])
def test_model_names_never_escape_the_models_directory(tmp_path: Path, name: str) -> None:
    write(tmp_path, "default.toml", default_policy_text())
    write(tmp_path, "models/churn.toml", "[production.sign_off]\napprovers = 3\n")

    assert len(load_policy(tmp_path, name).sources) == 1


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy directory does not exist") as raised:
        load_policy(tmp_path / "nope", "churn")

    assert raised.value.file == str(tmp_path / "nope")


OVERRIDE = "models/churn.toml"


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        (
            "[production.metrics\nprimary = 'auc'\n",
            None,
            "invalid TOML: Expected ']' at the end of a table declaration",
        ),
        ("[production.metrics]\nprimery = 'auc'\n", "production.metrics.primery", "Extra inputs are not permitted"),
        ("[production.bogus]\nx = 1\n", "production.bogus", "Extra inputs are not permitted"),
        ("[production.metrics]\nmin_improvement = 'high'\n", "production.metrics.min_improvement", "valid number"),
        (
            "[production.metrics]\ndirection = 'maximise'\n",
            "production.metrics.direction",
            "Input should be 'maximize' or 'minimize' (got 'maximise')",
        ),
        (
            "[production.metrics]\nmin_improvement = -0.1\n",
            "production.metrics.min_improvement",
            "greater than or equal to 0",
        ),
        ("[production.metrics]\nmin_improvement = nan\n", "production.metrics.min_improvement", "finite number"),
        (
            "[production.metrics]\nabsolute_thresholds = { f1 = 0.5 }\n",
            "production.metrics",
            "absolute threshold for 'f1' has no direction",
        ),
        (
            "[[production.metrics.guardrails]]\nmetric = 'auc'\ndirection = 'maximize'\n",
            "production.metrics",
            "metric 'auc' is the primary metric and cannot also be a guardrail",
        ),
        (
            "[[production.metrics.guardrails]]\nmetric = 'f1'\ndirection = 'up'\n",
            "production.metrics.guardrails[0].direction",
            "Input should be 'maximize' or 'minimize'",
        ),
        (
            "[production.leakage]\nforbidden_patterns = ['ok', '(unclosed']\n",
            "production.leakage.forbidden_patterns[1]",
            "invalid regular expression '(unclosed': missing ), unterminated subpattern",
        ),
        (
            "[production.leakage]\nmax_feature_share = 1.5\n",
            "production.leakage.max_feature_share",
            "less than or equal to 1",
        ),
        ("[production.leakage]\nmax_feature_share = 0\n", "production.leakage.max_feature_share", "greater than 0"),
        (
            "[production.sign_off]\nexpires_after = '7 days'\n",
            "production.sign_off.expires_after",
            "invalid duration '7 days': use e.g. '7d', '24h', '1d12h', '30m'",
        ),
        (
            "[production.sign_off]\nreminder_every = 3600\n",
            "production.sign_off.reminder_every",
            "a duration must be a string such as '7d', '24h' or '30m'",
        ),
        ("[production.sign_off]\napprovers = -1\n", "production.sign_off.approvers", "greater than or equal to 0"),
        (
            "[production.tests]\nmode = 'command'\n",
            "production.tests",
            "mode 'command' needs a non-empty 'command' list",
        ),
        ("[production.tests]\nmode = 'ci'\n", "production.tests.mode", "Input should be 'command' or 'attestation'"),
        ("production = 1\n", "production", "valid dictionary or instance of StagePolicy"),
        ("schema_version = 2\n", "schema_version", "Input should be 1"),
    ],
)
def test_broken_override_is_refused_naming_file_and_field(
    tmp_path: Path, text: str, field: str | None, message: str
) -> None:
    path = write(tmp_path, OVERRIDE, text)

    with pytest.raises(PolicyError) as raised:
        load_policy(tmp_path, "churn")

    error = raised.value
    assert (error.file, error.field) == (str(path), field)
    first_line = str(error).splitlines()[0]
    assert first_line.startswith(f"{path}: {field}: " if field else f"{path}: ")
    assert message in first_line


def test_errors_in_the_default_are_blamed_on_the_default(tmp_path: Path) -> None:
    default = write(
        tmp_path, "default.toml", default_policy_text().replace('reminder_every = "1h"', 'reminder_every = "soon"')
    )
    write(tmp_path, OVERRIDE, "[production.sign_off]\napprovers = 2\n")

    with pytest.raises(PolicyError) as raised:
        load_policy(tmp_path, "churn")

    assert (raised.value.file, raised.value.field) == (str(default), "rollback.sign_off.reminder_every")


def test_missing_required_field_is_blamed_on_the_file_that_introduced_the_table(tmp_path: Path) -> None:
    write(tmp_path, "default.toml", default_policy_text().replace('primary = "auc"\n', ""))
    override = write(tmp_path, OVERRIDE, "[staging.metrics]\ndirection = 'minimize'\n")

    with pytest.raises(PolicyError) as raised:
        load_policy(tmp_path, "churn")

    assert str(raised.value).splitlines() == [
        f"{tmp_path / 'default.toml'}: production.metrics.primary: Field required",
        f"{override}: staging.metrics.primary: Field required",
    ]


def test_every_error_is_listed_and_the_first_one_named(tmp_path: Path) -> None:
    path = write(tmp_path, OVERRIDE, "[production.metrics]\ndirection = 'up'\nmin_improvement = 'x'\n")

    with pytest.raises(PolicyError) as raised:
        load_policy(tmp_path, "churn")

    assert raised.value.field == "production.metrics.direction"
    assert [line.split(": ")[1] for line in str(raised.value).splitlines()] == [
        "production.metrics.direction",
        "production.metrics.min_improvement",
    ]
    assert str(raised.value).count(str(path)) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xff\xfe[production]", "policy file is not UTF-8")],
)
def test_unreadable_files_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "default.toml"
    path.write_bytes(content)

    with pytest.raises(PolicyError, match=message) as raised:
        load_policy(tmp_path, "churn")

    assert (raised.value.file, raised.value.field) == (str(path), None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("24h", timedelta(hours=24)),
        ("30m", timedelta(minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("2w", timedelta(weeks=2)),
        ("90s", timedelta(seconds=90)),
        (" 1h ", timedelta(hours=1)),
        (timedelta(hours=2), timedelta(hours=2)),
    ],
)
def test_durations_parse(text: str | timedelta, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "invalid duration ''"),
        ("7", "invalid duration '7'"),
        ("7days", "invalid duration '7days'"),
        ("12h1d", "invalid duration '12h1d'"),
        ("-1d", "invalid duration '-1d'"),
        ("P7D", "invalid duration 'P7D'"),
        ("30s", "duration must be between 1m and 3650d, got 30s"),
        ("3651d", "duration must be between 1m and 3650d, got 3651d"),
        ("0m", "duration must be between 1m and 3650d, got 0s"),
        (60, "a duration must be a string"),
    ],
)
def test_bad_durations_are_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [(timedelta(days=7), "7d"), (timedelta(hours=36), "1d12h"), (timedelta(minutes=90), "1h30m"), (timedelta(0), "0s")],
)
def test_durations_format_compactly(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    if value:
        assert parse_duration(text) == value


def test_policy_survives_a_json_round_trip(tmp_path: Path) -> None:
    policy = load_policy(tmp_path, "churn").policy

    again = type(policy).model_validate_json(policy.model_dump_json())

    assert again == policy
    assert policy_hash(again) == policy_hash(policy)
