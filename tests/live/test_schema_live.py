"""
schemathesis against the project's own OpenAPI schema (/api/schema/), on a
real daphne, authenticated with a token: for every operation, data that fits
the schema and data that does not. No response is a 5xx, and every documented
response conforms to the schema (status, content type and body).

SCHEMA_EXAMPLES (default 25; 10 for the login, which hashes a password) is the
number of examples per operation and mode;
the count of cases is printed and recorded as a test property.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from chat.models import Membership, Room

from .conftest import DaphneProcess

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.live]

SCHEMA_EXAMPLES = int(os.environ.get("SCHEMA_EXAMPLES", "25"))
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
# Path values that once made a 500 or a 503 here: NUL (PostgreSQL refuses it),
# digits that str.isdigit() accepts and int() does not, and a few classics.
HOSTILE_PATH_VALUES = ["\x00", "a\x00b", "\u00b9", "\u00b2", "\u0661", "-1", "9" * 30, "..", "%"]


@pytest.fixture
def api_server(django_db_setup, redis_url):
    """A daphne of its own: the fuzzing spends its login throttle and fills its log."""
    proc = DaphneProcess(redis_url=redis_url).start()
    yield proc
    proc.stop()


def test_every_api_operation_answers_without_a_5xx_and_as_its_schema_says(
    api_server, make_user, token_for, record_property
):
    alice, bob = make_user("alice"), make_user("bob")
    Room.objects.create(slug="general", name="General")
    secret = Room.objects.create(slug="secret", name="Secret", is_private=True)
    Membership.objects.create(room=secret, user=alice, role=Membership.Role.OWNER)
    bobs = Room.objects.create(slug="bobs", name="Bob's", is_private=True)
    Membership.objects.create(room=bobs, user=bob, role=Membership.Role.OWNER)
    token = token_for(alice)
    headers = {"Authorization": f"Token {token}"}
    session = requests.Session()  # keep-alive: one connection for all the cases

    def run_cases(strategy, record: str, examples: int) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def call(case) -> None:
            response = case.call_and_validate(
                base_url=api_server.http,
                session=session,
                headers=headers,
                checks=CHECKS,
                timeout=10,
            )
            tally[f"{record} -> {response.status_code}"] += 1

        call()

    schema = schemathesis.openapi.from_url(f"{api_server.http}/api/schema/", timeout=10)
    tally: Counter[str] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        label = f"{operation.method.upper()} {operation.path}"
        # A login costs a password hash (about 0.2 s, by design): fewer of those.
        examples = (
            min(SCHEMA_EXAMPLES, 10) if operation.path == "/api/auth/token/" else SCHEMA_EXAMPLES
        )
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategies = [operation.as_strategy(generation_mode=mode)]
            for name in re.findall(r"{(\w+)}", operation.path) if mode.is_positive else ():
                # Real rooms (public, private and mine, private and not mine)
                # and hostile values, every time rather than by chance.
                values = ["general", "secret", "bobs"] if name == "slug" else ["1"]
                strategies += [
                    operation.as_strategy(generation_mode=mode, path_parameters={name: value})
                    for value in values + HOSTILE_PATH_VALUES
                ]

            try:
                run_cases(st.one_of(strategies), record=f"{label} {mode.value}", examples=examples)
            except Unsatisfiable:
                # Nothing in this operation can be made invalid (no body, no
                # typed parameter): the positive run covered it.
                assert mode is GenerationMode.NEGATIVE, label
                tally[f"{label} negative: nothing to make invalid"] += 0
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect, then fail
                failures.append(f"{label} ({mode.value}):\n{exc}")
    elapsed = time.monotonic() - started
    count = sum(tally.values())
    record_property("schemathesis_operations", operations)
    record_property("schemathesis_cases", count)
    summary = "\n".join(f"  {n:5d}  {key}" for key, n in sorted(tally.items()))
    print(
        f"\nschemathesis: {count} cases over {operations} operations in {elapsed:.1f} s\n{summary}"
    )
    assert not failures, "\n\n".join(failures)
    assert operations >= 10 and count >= operations * min(SCHEMA_EXAMPLES, 10)
    log = api_server.log_text()
    assert "Traceback" not in log, log[-4000:]
