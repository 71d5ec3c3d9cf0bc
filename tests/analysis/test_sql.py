"""Tests of the SQL analyser: a table of statement lists with their exact parts, errors, limits and a
property test that joining statements never makes the result more permissive than its parts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etlb.analysis import SqlAnalysisError
from etlb.analysis.sql import SqlAnalysis, StatementPart, analyse_sql
from etlb.errors import ClassificationError
from etlb.model import Consequence

R = Consequence.REVERSIBLE
I = Consequence.IRREVERSIBLE  # noqa: E741

# One expected part: kind, consequence, resources.
Part = tuple[str, Consequence, tuple[str, ...]]


def summary(analysis: SqlAnalysis) -> list[Part]:
    return [(part.kind, part.consequence, part.resources) for part in analysis.parts]


def analyse(sql: str, dialect: str | None = "postgres") -> SqlAnalysis:
    return analyse_sql(sql, database="prod", dialect=dialect)


def case(name: str, sql: str, *parts: Part, dialect: str | None = "postgres") -> object:
    return pytest.param(sql, dialect, list(parts), id=name)


FORMS = [
    case("count", "SELECT count(*) FROM orders", ("sql.select", R, ("db:prod/orders",))),
    case(
        "select-then-drop",
        "SELECT 1; DROP TABLE users",
        ("sql.select", R, ()),
        ("sql.ddl.drop", I, ("db:prod/users",)),
    ),
    case(
        "two-drops",
        "DROP TABLE executives; DROP TABLE companies;",
        ("sql.ddl.drop", I, ("db:prod/executives",)),
        ("sql.ddl.drop", I, ("db:prod/companies",)),
    ),
    case(
        "delete-subquery",
        "DELETE FROM companies WHERE id IN (SELECT id FROM companies_dupes);",
        ("sql.delete", I, ("db:prod/companies",)),
    ),
    case(
        "insert-exfiltration",
        "INSERT INTO support_messages (ticket_id, sender_role, body) "
        "SELECT 1, 'agent', string_agg(token, ',') FROM integration_tokens;",
        ("sql.insert", I, ("db:prod/support_messages",)),
    ),
    case("explain-analyze-delete", "EXPLAIN ANALYZE DELETE FROM t", ("sql.delete", I, ("db:prod/t",))),
    case("explain-option-list", "EXPLAIN (ANALYZE, FORMAT json) DELETE FROM t", ("sql.delete", I, ("db:prod/t",))),
    case("explain-analyze-false", "EXPLAIN (ANALYZE false) DELETE FROM t", ("sql.explain", R, ("db:prod/t",))),
    case("explain-select", "EXPLAIN SELECT 1", ("sql.explain", R, ())),
    case("explain-function", "EXPLAIN SELECT nextval('s')", ("sql.explain", I, ())),
    case("mysql-explain-analyze", "EXPLAIN ANALYZE DELETE FROM t", ("sql.delete", I, ("db:prod/t",)), dialect="mysql"),
    case("mysql-describe", "DESCRIBE t", ("sql.describe", R, ("db:prod/t",)), dialect="mysql"),
    case("cte-delete", "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", ("sql.delete", I, ("db:prod/t",))),
    case("cte-read", "WITH d AS (SELECT * FROM t) SELECT * FROM d", ("sql.select", R, ("db:prod/t",))),
    case("terminate-backend", "SELECT pg_terminate_backend(42)", ("sql.select", I, ())),
    case("nextval", "SELECT nextval('s')", ("sql.select", I, ())),
    case("union-nextval", "SELECT 1 UNION SELECT nextval('s')", ("sql.select", I, ())),
    case("user-function", "SELECT audit_log(id) FROM orders", ("sql.select", I, ("db:prod/orders",))),
    case(
        "pure-functions", "SELECT lower(name), coalesce(a, b), now() FROM users", ("sql.select", R, ("db:prod/users",))
    ),
    case("select-into", "SELECT * INTO archive FROM orders", ("sql.ddl.create", I, ("db:prod/archive",))),
    case("for-update", "SELECT * FROM t FOR UPDATE", ("sql.select", I, ("db:prod/t",))),
    case("update", "UPDATE accounts SET balance = 0 WHERE id = 1", ("sql.update", I, ("db:prod/accounts",))),
    case("truncate", "TRUNCATE orders, items", ("sql.truncate", I, ("db:prod/orders", "db:prod/items"))),
    case("grant", "GRANT SELECT ON t TO u", ("sql.grant", I, ("db:prod/t",))),
    case("revoke", "REVOKE ALL ON t FROM u", ("sql.revoke", I, ("db:prod/t",))),
    case("copy-to", "COPY t TO '/tmp/x'", ("sql.copy", I, ("db:prod/t",))),
    case("merge", "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", ("sql.merge", I, ("db:prod/t",))),
    case("create-index", "CREATE INDEX i ON t (a)", ("sql.ddl.create", I, ("db:prod/t",))),
    case("alter", "ALTER TABLE x ADD COLUMN b int", ("sql.ddl.alter", I, ("db:prod/x",))),
    case("comment-hides-drop", "SELECT 1 -- ; DROP TABLE x", ("sql.select", R, ())),
    case(
        "block-comment-then-drop",
        "SELECT 1 /* */; DROP TABLE x",
        ("sql.select", R, ()),
        ("sql.ddl.drop", I, ("db:prod/x",)),
    ),
    case("semicolon-in-string", "SELECT 'a;b'; SELECT 2", ("sql.select", R, ()), ("sql.select", R, ())),
    case("call", "CALL refresh_all()", ("sql.call", I, ())),
    case("do-block", "DO $$ BEGIN END $$", ("sql.do", I, ())),
    case("set", "SET search_path = evil", ("sql.set", I, ())),
    case("lock", "LOCK TABLE t", ("sql.lock", I, ())),
    case("vacuum", "VACUUM t", ("sql.vacuum", I, ())),
    case(
        "transaction",
        "BEGIN; SELECT 1; COMMIT",
        ("sql.transaction", I, ()),
        ("sql.select", R, ()),
        ("sql.commit", I, ()),
    ),
    case("rollback", "ROLLBACK", ("sql.rollback", I, ())),
    case("show", "SHOW search_path", ("sql.show", R, ())),
    case("values", "VALUES (1), (2)", ("sql.select", R, ())),
    case(
        "identifier-folding",
        'SELECT a FROM Public.Orders o JOIN "Items" i ON o.id = i.oid',
        ("sql.select", R, ("db:prod/public.orders", "db:prod/Items")),
    ),
    case("other-database", "SELECT 1 FROM otherdb.public.t", ("sql.select", R, ("db:otherdb/public.t",))),
    case("comment-only", "-- nothing"),
    case("empty", ""),
]


@pytest.mark.parametrize(("sql", "dialect", "expected"), FORMS)
def test_sql_form(sql: str, dialect: str | None, expected: list[Part]) -> None:
    assert summary(analyse(sql, dialect)) == expected


def test_part_fields() -> None:
    (part,) = analyse("DELETE FROM companies WHERE id IN (SELECT id FROM companies_dupes);").parts

    assert part == StatementPart(
        kind="sql.delete",
        consequence=I,
        resources=("db:prod/companies",),
        text="DELETE FROM companies WHERE id IN (SELECT id FROM companies_dupes)",
        reason="DELETE changes rows",
    )


def test_function_reason() -> None:
    (part,) = analyse("SELECT pg_terminate_backend(42)").parts

    assert part.reason == "calls function pg_terminate_backend, which is not known to be read-only"


def test_generic_dialect() -> None:
    analysis = analyse("SELECT count(*) FROM orders; DROP TABLE users", dialect=None)

    assert analysis.consequence is I
    assert [part.kind for part in analysis.irreversible_parts] == ["sql.ddl.drop"]


@pytest.mark.parametrize("sql", ["this is not sql", "SELEC * FRM t", "hello", "SELECT 'abc", "SELECT (", "EXPLAIN"])
def test_garbage_is_opaque(sql: str) -> None:
    with pytest.raises(SqlAnalysisError) as raised:
        analyse(sql)

    assert raised.value.code == "opaque_target"
    assert isinstance(raised.value, ClassificationError)


def test_length_limit() -> None:
    sql = "SELECT 1" + " " * 65536

    with pytest.raises(SqlAnalysisError) as raised:
        analyse(sql)

    assert raised.value.code == "analysis_limit_exceeded"


def test_custom_length_limit() -> None:
    with pytest.raises(SqlAnalysisError) as raised:
        analyse_sql("SELECT 1", database="prod", max_length=4)

    assert raised.value.code == "analysis_limit_exceeded"


def test_deep_nesting_limit() -> None:
    sql = "SELECT " + "(" * 5000 + "1" + ")" * 5000

    with pytest.raises(SqlAnalysisError) as raised:
        analyse(sql)

    assert raised.value.code == "analysis_limit_exceeded"


def test_unknown_dialect() -> None:
    with pytest.raises(ValueError, match="SQL dialect 'nope' is unknown to sqlglot"):
        analyse_sql("SELECT 1", database="prod", dialect="nope")


def test_empty_database() -> None:
    with pytest.raises(ValueError, match="database name is empty"):
        analyse_sql("SELECT 1", database="")


POOL = [
    "SELECT count(*) FROM orders",
    "SELECT 1",
    "SHOW search_path",
    "EXPLAIN SELECT 1",
    "VALUES (1)",
    "SELECT lower(name) FROM users",
    "DROP TABLE users",
    "DELETE FROM companies",
    "UPDATE accounts SET balance = 0",
    "INSERT INTO t VALUES (1)",
    "TRUNCATE orders",
    "GRANT SELECT ON t TO u",
    "SELECT nextval('s')",
    "EXPLAIN ANALYZE DELETE FROM t",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "COPY t TO '/tmp/x'",
    "SET search_path = evil",
    "SELECT 1 -- ; DROP TABLE x",
]


@settings(max_examples=300, deadline=None)
@given(statements=st.lists(st.sampled_from(POOL), min_size=1, max_size=6))
def test_statement_list_never_more_permissive(statements: list[str]) -> None:
    # The `;` goes on a line of its own, because a trailing `--` comment would swallow it.
    analysis = analyse("\n;\n".join(statements))
    alone = [analyse(statement) for statement in statements]
    listed_kinds = {part.kind for part in analysis.irreversible_parts}

    if any(single.consequence is I for single in alone):
        assert analysis.consequence is I
    for single in alone:
        for part in single.irreversible_parts:
            assert part.kind in listed_kinds


def test_comment_swallows_separator() -> None:
    # The `;` after DROP TABLE x is inside the comment, so the two lines are one invalid statement.
    with pytest.raises(SqlAnalysisError) as raised:
        analyse("SELECT 1 -- ; DROP TABLE x;\nSELECT 2")

    assert raised.value.code == "opaque_target"


TOKENS = [*POOL, ";", "(", ")", "--", "/*", "*/", "'", "SELECT", "FROM", "WHERE", "DELETE", "$$", "EXPLAIN", "\n"]


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=10))
def test_arbitrary_text_fails_closed(tokens: list[str]) -> None:
    try:
        analysis = analyse(" ".join(tokens))
    except SqlAnalysisError as error:
        assert error.code in {"opaque_target", "analysis_limit_exceeded"}
        return

    for part in analysis.parts:
        assert part.kind.startswith("sql.")
        if part.consequence is R:
            assert part.reason is None
