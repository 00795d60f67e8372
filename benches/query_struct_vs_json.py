#!/usr/bin/env python3
"""One practitioner query against a store, in one process (for a whole-process timer such as
/usr/bin/time -v): the same question asked of a store whose userIdentity is JSON text (before
issue 12) or a struct (after).

    query_struct_vs_json.py STORE json|struct arn|issuer|root [ARN]

arn: events of one principal (a filter on userIdentity.arn); issuer: events per role session issuer
(group by sessionContext.sessionIssuer.arn); root: root usage (type Root, not invoked by a service).
Prints the answer's row count and the sum of its last column, so the two layouts can be compared.
"""
import sys

import duckdb

QUERIES = {
    ("arn", "json"): "SELECT count(*) FROM t WHERE json_extract_string(userIdentity, '$.arn') = $arn",
    ("arn", "struct"): "SELECT count(*) FROM t WHERE userIdentity.arn = $arn",
    ("issuer", "json"): """SELECT json_extract_string(userIdentity, '$.sessionContext.sessionIssuer.arn') AS issuer,
                                  count(*) AS n FROM t GROUP BY 1""",
    ("issuer", "struct"): "SELECT userIdentity.sessionContext.sessionIssuer.arn AS issuer, count(*) AS n FROM t GROUP BY 1",
    ("root", "json"): """SELECT count(*) FROM t WHERE json_extract_string(userIdentity, '$.type') = 'Root'
                                AND json_extract_string(userIdentity, '$.invokedBy') IS NULL""",
    ("root", "struct"): "SELECT count(*) FROM t WHERE userIdentity.type = 'Root' AND userIdentity.invokedBy IS NULL",
}


def main() -> None:
    store, layout, question = sys.argv[1:4]
    arn = sys.argv[4] if len(sys.argv) > 4 else ""
    con = duckdb.connect()
    con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{store}/events/**/*.parquet', hive_partitioning = true)")
    sql = QUERIES[(question, layout)]
    rows = con.execute(sql, {"arn": arn} if "$arn" in sql else {}).fetchall()
    print(len(rows), sum(r[-1] for r in rows))


if __name__ == "__main__":
    main()
