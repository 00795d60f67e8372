"""DuckDB baseline for benches/run.sh: the same .json.gz trail files to one zstd Parquet file with
trailcopy's typed columns (records unnested, nested objects as JSON text, eventTime a UTC
timestamp). No validation, dedup, date partitioning or otherFields: a generous baseline.

usage: duckdb_convert.py TRAIL_DIR OUT.parquet THREADS   -> one JSON line on stdout
"""
import json
import sys
import time

import duckdb

# trailcopy's typed columns (functions/core/src/event.rs COLUMNS), in order.
STR = ["eventVersion", "eventSource", "eventName", "awsRegion", "sourceIPAddress", "userAgent",
       "errorCode", "errorMessage", "requestID", "eventID", "eventType", "apiVersion",
       "recipientAccountId", "sharedEventID", "vpcEndpointId", "vpcEndpointAccountId",
       "eventCategory", "sessionCredentialFromConsole"]
BOOL = ["readOnly", "managementEvent"]
JSON = ["userIdentity", "requestParameters", "responseElements", "additionalEventData", "resources",
        "serviceEventDetails", "tlsDetails", "addendum", "edgeDeviceDetails", "insightDetails",
        "eventContext"]
ORDER = ["eventVersion", "eventTime", "eventSource", "eventName", "awsRegion", "sourceIPAddress",
         "userAgent", "errorCode", "errorMessage", "requestID", "eventID", "eventType", "apiVersion",
         "readOnly", "managementEvent", "recipientAccountId", "sharedEventID", "vpcEndpointId",
         "vpcEndpointAccountId", "eventCategory", "sessionCredentialFromConsole"] + JSON


def main():
    trail, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    types = {**{c: "VARCHAR" for c in STR}, **{c: "BOOLEAN" for c in BOOL},
             **{c: "JSON" for c in JSON}, "eventTime": "TIMESTAMPTZ"}
    struct = "STRUCT(" + ", ".join(f'"{c}" {types[c]}' for c in ORDER) + ")[]"
    con = duckdb.connect()
    con.execute(f"SET threads={threads}")
    con.execute("SET TimeZone='UTC'")
    con.execute("SET preserve_insertion_order=false")
    glob = f"{trail}/**/CloudTrail/*/*/*/*/*.json.gz"
    started = time.perf_counter()
    con.execute(f"""
        COPY (
            SELECT unnest(r) FROM (
                SELECT unnest(Records) AS r
                FROM read_json('{glob}', format='unstructured', compression='gzip',
                               maximum_object_size=33554432,
                               columns={{'Records': '{struct}'}})
            )
        ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)
    """)
    seconds = time.perf_counter() - started
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    print(json.dumps({"threads": threads, "rows": rows, "seconds": round(seconds, 4),
                      "duckdb": duckdb.__version__}))


if __name__ == "__main__":
    main()
