"""SQL analysis: split a statement list and classify each statement as read-only or not.

The parser is sqlglot (PyPI `sqlglot`), which reads many dialects and needs no server. pglast would
parse PostgreSQL exactly, but only PostgreSQL, and it builds a C extension.

Invariants, each enforced below:

- Statements are split on the `;` tokens of sqlglot's tokenizer, so a `;` inside a string literal or a
  comment does not split, and `SELECT 1 -- ; DROP TABLE x` is one statement.
- A statement list is reversible only if every statement is. Only queries (`SELECT`, set operations,
  `VALUES`, `TABLE`), `SHOW`, `DESCRIBE` and `EXPLAIN` without `ANALYZE` can be reversible.
- A query is irreversible when it calls a function outside `PURE_FUNCTIONS` (such as `nextval`,
  `pg_terminate_backend`, `lo_import` or any user-defined function), contains a data-modifying
  `WITH` clause, has `INTO`, or takes row locks with `FOR UPDATE` or `FOR SHARE`.
- `EXPLAIN ANALYZE <statement>` runs the statement, so it is classified as that statement. A plain
  `EXPLAIN` only plans it, but the planner may evaluate functions, so the function rule still applies.
- `COPY`, `CALL`, `DO`, `SET`, `LOCK`, `VACUUM`, `ANALYZE`, `PREPARE`, `EXECUTE`, transaction control
  and every statement type not named here are irreversible. `SET` and `USE` change how later
  statements resolve names, and `COMMIT` or `ROLLBACK` settle changes made earlier in the session.
- Resources are `db:<database>/<table>`, or `db:<database>/<schema>.<table>` for a qualified name. A
  three-part name `catalog.schema.table` names another database, `db:<catalog>/<schema>.<table>`.
  Unquoted identifiers are normalised the way the dialect folds them (PostgreSQL: lower case).
  Writing statements list the tables they write; read-only statements list the tables they read.
- Text that does not parse, or that parses only as an expression rather than a statement, raises
  `SqlAnalysisError` with code `opaque_target`. Text longer than `max_length` characters, or nested
  deeper than Python's recursion limit allows, raises it with code `analysis_limit_exceeded`.
- An empty statement list, or one that contains only comments, has no parts and is reversible.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlglot import Token, TokenType, exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers

from etlb.analysis import ANALYSIS_LIMIT_EXCEEDED, OPAQUE_TARGET, SqlAnalysisError
from etlb.model import Consequence

__all__ = ["PURE_FUNCTIONS", "SqlAnalysis", "StatementPart", "analyse_sql"]

# Functions known to read their arguments and nothing else. Names are sqlglot's names for the
# functions it models (`string_agg` parses as GROUP_CONCAT, `date_trunc` as TIMESTAMP_TRUNC) and the
# SQL names of the rest. Any other function may write, so calling it makes a query irreversible.
PURE_FUNCTIONS = frozenset(
    {
        "ABS",
        "ANY_VALUE",
        "APPROX_DISTINCT",
        "ARRAY",
        "ARRAY_AGG",
        "ARRAY_LENGTH",
        "AVG",
        "BOOL_AND",
        "BOOL_OR",
        "CASE",
        "CAST",
        "CEIL",
        "CEILING",
        "CHAR_LENGTH",
        "COALESCE",
        "CONCAT",
        "CONCAT_WS",
        "COUNT",
        "COUNT_IF",
        "CUME_DIST",
        "CURRENT_DATE",
        "CURRENT_TIME",
        "CURRENT_TIMESTAMP",
        "DATE",
        "DATE_PART",
        "DATE_TRUNC",
        "DENSE_RANK",
        "EXISTS",
        "EXP",
        "EXPLODE",
        "EXPLODING_GENERATE_SERIES",
        "EXTRACT",
        "FIRST_VALUE",
        "FLOOR",
        "GENERATE_SERIES",
        "GREATEST",
        "GROUP_CONCAT",
        "IF",
        "INITCAP",
        "JSONB_AGG",
        "JSON_AGG",
        "JSON_EXTRACT",
        "JSON_EXTRACT_SCALAR",
        "LAG",
        "LAST_VALUE",
        "LEAD",
        "LEAST",
        "LEFT",
        "LENGTH",
        "LN",
        "LOG",
        "LOWER",
        "LPAD",
        "LTRIM",
        "MAX",
        "MD5",
        "MIN",
        "MOD",
        "NOW",
        "NTILE",
        "NULLIF",
        "PERCENT_RANK",
        "POSITION",
        "POWER",
        "RANK",
        "REGEXP_LIKE",
        "REGEXP_REPLACE",
        "REPLACE",
        "REVERSE",
        "RIGHT",
        "ROUND",
        "ROW_NUMBER",
        "RPAD",
        "RTRIM",
        "SIGN",
        "SPLIT_PART",
        "SQRT",
        "STDDEV",
        "STDDEV_POP",
        "STDDEV_SAMP",
        "STRPOS",
        "STRING_AGG",
        "SUBSTRING",
        "SUM",
        "TIMESTAMP_TRUNC",
        "TO_CHAR",
        "TO_DATE",
        "TO_TIMESTAMP",
        "TRIM",
        "TRUNC",
        "TRY_CAST",
        "UNNEST",
        "UPPER",
        "VARIANCE",
        "VAR_POP",
        "VAR_SAMP",
    }
)

_WRITE_KINDS: dict[type[exp.Expression], str] = {
    exp.Insert: "sql.insert",
    exp.Update: "sql.update",
    exp.Delete: "sql.delete",
    exp.Merge: "sql.merge",
}

# Statement types sqlglot models, with their kind and the reason they are irreversible.
_OTHER_STATEMENTS: dict[type[exp.Expression], tuple[str, str]] = {
    exp.Create: ("sql.ddl.create", "CREATE changes the schema"),
    exp.Drop: ("sql.ddl.drop", "DROP deletes the object and its data"),
    exp.Alter: ("sql.ddl.alter", "ALTER changes the schema and can drop columns"),
    exp.TruncateTable: ("sql.truncate", "TRUNCATE deletes every row"),
    exp.Grant: ("sql.grant", "GRANT changes privileges"),
    exp.Revoke: ("sql.revoke", "REVOKE changes privileges"),
    exp.Copy: ("sql.copy", "COPY moves data between a table and a file or program"),
    exp.Set: ("sql.set", "SET changes session settings, such as search_path, that later statements depend on"),
    exp.Use: ("sql.use", "USE changes the database that later statements resolve names in"),
    exp.Transaction: ("sql.transaction", "transaction control settles changes made earlier in the session"),
    exp.Commit: ("sql.commit", "COMMIT makes every change of the transaction permanent"),
    exp.Rollback: ("sql.rollback", "ROLLBACK discards every change of the transaction"),
    exp.Comment: ("sql.comment", "COMMENT changes the catalog"),
    exp.Pragma: ("sql.pragma", "PRAGMA can change database settings and files"),
    exp.Analyze: ("sql.analyze", "ANALYZE rewrites planner statistics"),
}

# Results of parsing text that is not a statement, such as `hello` or `SELEC * FRM t`.
_NOT_STATEMENTS = (exp.Condition, exp.Alias, exp.Identifier, exp.Tuple, exp.Star, exp.Paren)

# Keywords that sqlglot keeps as an unparsed `Command`, with the reasons they are irreversible.
_COMMAND_REASONS = {
    "CALL": "CALL runs a procedure, which may write",
    "DO": "DO runs an anonymous code block, which may write",
    "LOCK": "LOCK takes table locks until the transaction ends",
    "VACUUM": "VACUUM rewrites tables and removes dead rows",
    "ANALYZE": "ANALYZE rewrites planner statistics",
    "PREPARE": "PREPARE stores a statement that a later EXECUTE runs",
    "EXECUTE": "EXECUTE runs a prepared statement, which may write",
    "REFRESH": "REFRESH rewrites a materialized view",
    "DISCARD": "DISCARD drops session state",
    "RESET": "RESET changes session settings",
    "NOTIFY": "NOTIFY sends a message to other sessions",
}
_EXPLAIN_FLAGS = re.compile(r"^\s*((?:ANALYZE|ANALYSE|VERBOSE)\s+)*", re.IGNORECASE)
_FALSE_WORDS = frozenset({"FALSE", "OFF", "0", "NO"})


@dataclass(frozen=True, slots=True)
class StatementPart:
    """One SQL statement and its classification.

    `kind` is `sql.<statement>`, such as `sql.select`, `sql.delete`, `sql.ddl.drop` or `sql.grant`.
    `resources` are `db:<database>/<table>` strings. `reason` gives the cause when the statement is irreversible
    and is None for a read-only statement. `text` is the statement's source without its `;`.
    """

    kind: str
    consequence: Consequence
    resources: tuple[str, ...]
    text: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SqlAnalysis:
    """The statements of a SQL text, in order."""

    parts: tuple[StatementPart, ...]

    @property
    def consequence(self) -> Consequence:
        """Irreversible if any statement is; reversible for a text without statements."""
        if any(part.consequence is Consequence.IRREVERSIBLE for part in self.parts):
            return Consequence.IRREVERSIBLE
        return Consequence.REVERSIBLE

    @property
    def irreversible_parts(self) -> tuple[StatementPart, ...]:
        return tuple(part for part in self.parts if part.consequence is Consequence.IRREVERSIBLE)


def analyse_sql(sql: str, *, database: str, dialect: str | None = None, max_length: int = 65536) -> SqlAnalysis:
    """Parse a SQL statement list and classify every statement in it.

    `database` is the database the statements run in; it prefixes every resource. `dialect` is a
    sqlglot dialect name such as `postgres`, `mysql` or `sqlite`, and None selects sqlglot's generic
    dialect. Raises `SqlAnalysisError` for text that is too long or does not parse, and `ValueError`
    for an unknown dialect.
    """
    if len(sql) > max_length:
        message = f"SQL text is {len(sql)} characters long, over the analysis limit of {max_length}"
        raise SqlAnalysisError(message, ANALYSIS_LIMIT_EXCEEDED, hint="split the statements into smaller tool calls")
    if not database:
        message = "database name is empty; pass the name of the database the SQL runs in"
        raise ValueError(message)

    try:
        sqlglot_dialect = Dialect.get_or_raise(dialect)
    except ValueError as error:
        message = f"SQL dialect {dialect!r} is unknown to sqlglot; use a name such as postgres, mysql or sqlite"
        raise ValueError(message) from error

    analyser = _SqlAnalyser(sql, database, sqlglot_dialect)
    return SqlAnalysis(parts=tuple(analyser.analyse()))


class _SqlAnalyser:
    def __init__(self, sql: str, database: str, dialect: Dialect) -> None:
        self.sql = sql
        self.database = database
        self.dialect = dialect

    def analyse(self) -> list[StatementPart]:
        parts: list[StatementPart] = []
        for number, tokens in enumerate(self._statements(), start=1):
            text = self.sql[tokens[0].start : tokens[-1].end + 1]
            expression = self._parse(tokens, text, number)
            parts.append(self._classify(expression, text, number))
        return parts

    def _statements(self) -> list[list[Token]]:
        try:
            tokens = self.dialect.tokenize(self.sql)
        except TokenError as error:
            message = f"SQL text could not be tokenised: {error}"
            raise SqlAnalysisError(
                message, OPAQUE_TARGET, hint="check for an unterminated string or comment"
            ) from error

        statements: list[list[Token]] = [[]]
        for token in tokens:
            if token.token_type is TokenType.SEMICOLON:
                statements.append([])
            else:
                statements[-1].append(token)
        return [statement for statement in statements if statement]

    def _parse(self, tokens: list[Token], text: str, number: int) -> exp.Expression:
        try:
            expressions = self.dialect.parser().parse(tokens, self.sql)
        except ParseError as error:
            message = f"SQL statement {number} could not be parsed: {text[:200]!r}"
            raise SqlAnalysisError(
                message, OPAQUE_TARGET, hint="check the statement's syntax and the dialect"
            ) from error
        except RecursionError as error:
            message = f"SQL statement {number} is nested too deeply to analyse: {text[:200]!r}"
            raise SqlAnalysisError(message, ANALYSIS_LIMIT_EXCEEDED, hint="flatten nested subqueries") from error

        statements = [expression for expression in expressions if expression is not None]
        statement = statements[0] if len(statements) == 1 else None
        if not isinstance(statement, exp.Expression) or isinstance(statement, _NOT_STATEMENTS):
            message = f"SQL statement {number} is not a statement that sqlglot recognises: {text[:200]!r}"
            raise SqlAnalysisError(message, OPAQUE_TARGET, hint="check the statement's syntax and the dialect")
        return normalize_identifiers(statement, dialect=self.dialect)

    def _classify(self, expression: exp.Expression, text: str, number: int) -> StatementPart:
        if isinstance(expression, exp.Command):
            return self._command(expression, text, number)
        if isinstance(expression, exp.Describe):
            return self._describe(expression, text)

        write = self._write(expression, text)
        if write is not None:
            return write

        for statement_type, (kind, reason) in _OTHER_STATEMENTS.items():
            if isinstance(expression, statement_type):
                return self._irreversible(kind, reason, self._targets(expression), text)

        if isinstance(expression, exp.Query | exp.Values):
            return self._query(expression, text)

        reason = f"statement type {type(expression).__name__} is not known to be read-only"
        return self._irreversible(
            f"sql.{type(expression).__name__.lower()}", reason, self._read_tables(expression), text
        )

    def _write(self, expression: exp.Expression, text: str) -> StatementPart | None:
        """Classify a statement that contains INSERT, UPDATE, DELETE or MERGE anywhere, even in a CTE."""
        for write_type, kind in _WRITE_KINDS.items():
            if isinstance(expression, write_type):
                return self._irreversible(
                    kind, f"{kind.removeprefix('sql.').upper()} changes rows", self._targets(expression), text
                )

        for write in expression.find_all(*_WRITE_KINDS):
            kind = _WRITE_KINDS[type(write)]
            reason = f"a data-modifying WITH clause runs {kind.removeprefix('sql.').upper()}"
            return self._irreversible(kind, reason, self._targets(write), text)
        return None

    def _query(self, query: exp.Expression, text: str) -> StatementPart:
        into = query.args.get("into")
        if isinstance(into, exp.Into):
            return self._irreversible("sql.ddl.create", "SELECT INTO creates a table", self._targets(into), text)

        reads = self._read_tables(query)
        function = _impure_function(query)
        if function is not None:
            reason = f"calls function {function}, which is not known to be read-only"
            return self._irreversible("sql.select", reason, reads, text)
        if query.find(exp.Lock) is not None:
            return self._irreversible("sql.select", "FOR UPDATE or FOR SHARE takes row locks", reads, text)
        return StatementPart(kind="sql.select", consequence=Consequence.REVERSIBLE, resources=reads, text=text)

    def _describe(self, describe: exp.Describe, text: str) -> StatementPart:
        inner = describe.this
        style = str(describe.args.get("style") or "").upper()
        if isinstance(inner, exp.Table):
            return StatementPart(
                kind="sql.describe", consequence=Consequence.REVERSIBLE, resources=self._tables([inner]), text=text
            )
        if not isinstance(inner, exp.Expression):
            return self._irreversible("sql.describe", "DESCRIBE of an unrecognised statement", (), text)
        # MySQL parses EXPLAIN as DESCRIBE; `EXPLAIN ANALYZE` there runs the statement too.
        return self._explained(inner, text, analyze=style == "ANALYZE")

    def _command(self, command: exp.Command, text: str, number: int) -> StatementPart:
        keyword = str(command.this).upper()
        rest = command.expression.name if isinstance(command.expression, exp.Expression) else ""

        if keyword == "EXPLAIN":
            analyze, statement = _explain_options(rest)
            inner_tokens = self.dialect.tokenize(statement) if statement.strip() else []
            if not inner_tokens:
                message = f"SQL statement {number} is EXPLAIN without a statement: {text[:200]!r}"
                raise SqlAnalysisError(message, OPAQUE_TARGET, hint="add the statement to explain")
            inner = _SqlAnalyser(statement, self.database, self.dialect)._parse(inner_tokens, statement, number)
            return self._explained(inner, text, analyze=analyze)

        if keyword == "SHOW":
            return StatementPart(kind="sql.show", consequence=Consequence.REVERSIBLE, resources=(), text=text)

        reason = _COMMAND_REASONS.get(keyword, f"{keyword} is not known to be read-only")
        return self._irreversible(f"sql.{keyword.lower()}", reason, (), text)

    def _explained(self, inner: exp.Expression, text: str, *, analyze: bool) -> StatementPart:
        classified = self._classify(inner, text, 0)
        if analyze:
            reason = f"EXPLAIN ANALYZE runs the statement: {classified.reason}" if classified.reason else None
            return StatementPart(classified.kind, classified.consequence, classified.resources, text, reason)

        function = _impure_function(inner)
        if function is not None:
            reason = f"EXPLAIN may evaluate function {function} while planning, and it is not known to be read-only"
            return self._irreversible("sql.explain", reason, classified.resources, text)
        return StatementPart(
            kind="sql.explain", consequence=Consequence.REVERSIBLE, resources=classified.resources, text=text
        )

    # --- resources ------------------------------------------------------------------------------

    def _targets(self, expression: exp.Expression) -> tuple[str, ...]:
        """Return the tables a writing statement writes."""
        candidates: list[exp.Expression] = []
        for key in ("this", "tables", "expressions", "securable"):
            value = expression.args.get(key)
            items = value if isinstance(value, list) else [value]
            candidates.extend(item for item in items if isinstance(item, exp.Expression))

        tables: list[exp.Table] = []
        for candidate in candidates:
            if isinstance(candidate, exp.Schema) and isinstance(candidate.this, exp.Table):
                tables.append(candidate.this)
            elif isinstance(candidate, exp.Index) and isinstance(candidate.args.get("table"), exp.Table):
                tables.append(candidate.args["table"])
            elif isinstance(candidate, exp.Table):
                tables.append(candidate)
            elif isinstance(candidate, exp.UserDefinedFunction) and isinstance(candidate.this, exp.Expression):
                tables.append(exp.Table(this=exp.to_identifier(candidate.this.name)))
        return self._tables(tables)

    def _read_tables(self, expression: exp.Expression) -> tuple[str, ...]:
        ctes = {cte.alias_or_name for cte in expression.find_all(exp.CTE)}
        tables = [
            table
            for table in expression.find_all(exp.Table)
            if isinstance(table.this, exp.Identifier) and not (not table.db and table.name in ctes)
        ]
        return self._tables(tables)

    def _tables(self, tables: Iterable[exp.Table]) -> tuple[str, ...]:
        resources: list[str] = []
        for table in tables:
            if not table.name:
                continue
            database = table.catalog or self.database
            name = f"{table.db}.{table.name}" if table.db else table.name
            resources.append(f"db:{database}/{name}")
        return tuple(dict.fromkeys(resources))

    def _irreversible(self, kind: str, reason: str, resources: Iterable[str], text: str) -> StatementPart:
        return StatementPart(
            kind=kind, consequence=Consequence.IRREVERSIBLE, resources=tuple(resources), text=text, reason=reason
        )


def _impure_function(expression: exp.Expression) -> str | None:
    """Return the name of the first function call outside `PURE_FUNCTIONS`, or None."""
    for function in expression.find_all(exp.Func):
        name = function.name.upper() if isinstance(function, exp.Anonymous) else function.sql_name().upper()
        if name not in PURE_FUNCTIONS:
            return function.name if isinstance(function, exp.Anonymous) else name.lower()
    return None


def _explain_options(rest: str) -> tuple[bool, str]:
    """Split the text after EXPLAIN into whether ANALYZE is on and the explained statement.

    PostgreSQL accepts `EXPLAIN ANALYZE VERBOSE stmt` and `EXPLAIN (ANALYZE, FORMAT json) stmt`. An
    option list that cannot be read counts as ANALYZE, so the statement is classified as if it ran.
    """
    text = rest.lstrip()
    if text.startswith("("):
        closing = text.find(")")
        if closing == -1:
            return True, text
        analyze = False
        for option in text[1:closing].split(","):
            words = option.split()
            if words and words[0].upper() in {"ANALYZE", "ANALYSE"}:
                analyze = len(words) == 1 or words[1].upper() not in _FALSE_WORDS
        return analyze, text[closing + 1 :]

    match = _EXPLAIN_FLAGS.match(text)
    flags = match.group(0).upper() if match else ""
    return ("ANALYZE" in flags or "ANALYSE" in flags), text[len(flags) :]
