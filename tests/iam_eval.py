"""A small, honest IAM policy evaluator for the parts of the policy language trailcopy's template
uses, following the IAM User Guide:

- evaluation logic: an explicit Deny wins, then any Allow, else the request is implicitly denied
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html);
- Action / NotAction and Resource / NotResource with `*` and `?` wildcards; actions match case
  insensitively, resources case sensitively
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_action.html,
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html);
- Condition: operators AND-ed, keys of one operator AND-ed, the values of one key OR-ed; a key
  missing from the request makes a condition false, except for the negated operators (true) and
  `...IfExists` (true); `Null` tests presence
  (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html,
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_multi-value-conditions.html).
  Operators: StringEquals, StringNotEquals, StringEqualsIgnoreCase, StringNotEqualsIgnoreCase,
  StringLike, StringNotLike, ArnEquals, ArnLike, ArnNotEquals, ArnNotLike, Bool, Null, NumericEquals,
  NumericLessThan(Equals), NumericGreaterThan(Equals); condition keys are case insensitive.

Anything else (policy variables, ForAllValues/ForAnyValue, Principal matching for identity policies)
raises `Unsupported` instead of guessing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field


class Unsupported(Exception):
    pass


@dataclass
class Request:
    action: str                     # e.g. "s3:GetObject"
    resource: str                   # e.g. "arn:aws:s3:::bucket/key"
    context: dict = field(default_factory=dict)  # condition keys -> str or list of str
    note: str = ""                  # where the request came from, for messages

    def describe(self) -> str:
        ctx = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.action} on {self.resource}" + (f" [{ctx}]" if ctx else "") + (f" ({self.note})" if self.note else "")


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def _glob(pattern: str, value: str, ignore_case: bool) -> bool:
    if "${" in pattern:
        raise Unsupported(f"policy variables in {pattern!r}")
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL) is not None


def _arn_like(pattern: str, value: str) -> bool:
    # ARNs match by their six colon-separated parts, each part as a glob (the last may hold colons).
    p, v = pattern.split(":", 5), value.split(":", 5)
    if len(p) != 6 or len(v) != 6:
        return False
    return all(_glob(a, b, ignore_case=False) for a, b in zip(p, v))


def _string_ops():
    eq = lambda p, v: p == v  # noqa: E731
    ieq = lambda p, v: p.lower() == v.lower()  # noqa: E731
    like = lambda p, v: _glob(p, v, ignore_case=False)  # noqa: E731
    arn_eq = lambda p, v: p == v  # noqa: E731
    return {
        "StringEquals": (eq, False), "StringNotEquals": (eq, True),
        "StringEqualsIgnoreCase": (ieq, False), "StringNotEqualsIgnoreCase": (ieq, True),
        "StringLike": (like, False), "StringNotLike": (like, True),
        "ArnEquals": (arn_eq, False), "ArnNotEquals": (arn_eq, True),
        "ArnLike": (_arn_like, False), "ArnNotLike": (_arn_like, True),
        "Bool": (lambda p, v: str(p).lower() == str(v).lower(), False),
    }


_STRING_OPS = _string_ops()
_NUMERIC_OPS = {
    "NumericEquals": lambda p, v: v == p, "NumericNotEquals": lambda p, v: v != p,
    "NumericLessThan": lambda p, v: v < p, "NumericLessThanEquals": lambda p, v: v <= p,
    "NumericGreaterThan": lambda p, v: v > p, "NumericGreaterThanEquals": lambda p, v: v >= p,
}


def _lookup(context: dict, key: str):
    for k, v in context.items():
        if k.lower() == key.lower():
            return v
    return None


def condition_holds(condition: dict, context: dict) -> bool:
    for operator, keys in condition.items():
        if ":" in operator and operator.split(":")[0] in ("ForAllValues", "ForAnyValue"):
            raise Unsupported(f"set operator {operator}")
        if_exists = operator.endswith("IfExists")
        base = operator[: -len("IfExists")] if if_exists else operator
        for key, wanted in keys.items():
            present = _lookup(context, key)
            wanted = [str(w) if not isinstance(w, bool) else str(w).lower() for w in _as_list(wanted)]
            if base == "Null":
                if if_exists:
                    raise Unsupported("NullIfExists")
                is_null = present is None
                if not any(is_null == (w.lower() == "true") for w in wanted):
                    return False
                continue
            if present is None:
                if if_exists:
                    continue
                negated = base in _STRING_OPS and _STRING_OPS[base][1] or base == "NumericNotEquals"
                if negated:
                    continue
                return False
            values = [str(x) for x in _as_list(present)]
            if len(values) != 1:
                raise Unsupported(f"multi-valued request key {key} without ForAnyValue/ForAllValues")
            value = values[0]
            if base in _STRING_OPS:
                match, negated = _STRING_OPS[base]
                hit = any(match(w, value) for w in wanted)
                if hit == negated:
                    return False
            elif base in _NUMERIC_OPS:
                op = _NUMERIC_OPS[base]
                try:
                    hit = any(op(float(w), float(value)) for w in wanted)
                except ValueError:
                    return False
                if not hit:
                    return False
            else:
                raise Unsupported(f"condition operator {operator}")
    return True


def statement_applies(st: dict, req: Request) -> bool:
    if "Principal" in st or "NotPrincipal" in st:
        raise Unsupported("Principal in an identity policy")
    if "Action" in st:
        if not any(_glob(a, req.action, ignore_case=True) for a in _as_list(st["Action"])):
            return False
    elif "NotAction" in st:
        if any(_glob(a, req.action, ignore_case=True) for a in _as_list(st["NotAction"])):
            return False
    else:
        raise Unsupported("statement without Action or NotAction")
    if "Resource" in st:
        if not any(_glob(r, req.resource, ignore_case=False) for r in _as_list(st["Resource"])):
            return False
    elif "NotResource" in st:
        if any(_glob(r, req.resource, ignore_case=False) for r in _as_list(st["NotResource"])):
            return False
    else:
        raise Unsupported("statement without Resource or NotResource")
    return condition_holds(st.get("Condition", {}), req.context)


def evaluate(policies: list[dict], req: Request) -> str:
    """"Allow", "ExplicitDeny" or "ImplicitDeny" for the identity policies of one principal."""
    allowed = False
    for doc in policies:
        for st in _as_list(doc.get("Statement", [])):
            if not statement_applies(st, req):
                continue
            if st["Effect"] == "Deny":
                return "ExplicitDeny"
            if st["Effect"] == "Allow":
                allowed = True
    return "Allow" if allowed else "ImplicitDeny"


def matching_statements(policies: list[dict], req: Request) -> list[dict]:
    return [st for doc in policies for st in _as_list(doc.get("Statement", [])) if statement_applies(st, req)]
