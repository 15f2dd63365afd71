"""PAN-shaped sequences: one rule, two renderings (Python for extractors, Spark SQL for standardize)."""

from __future__ import annotations

import random
import uuid

import pytest

from fluxo.tokenize import has_pan, has_pan_sql, luhn_valid, mask_pans, mask_pans_sql, opaque_id

CASES = {
    "4111111111111111": "<pan ****1111>",
    "card 4111 1111 1111 1111.": "card <pan ****1111>.",
    "4111-1111-1111-1111": "<pan ****1111>",
    "4111 - 1111 - 1111 - 1111": "<pan ****1111>",
    "amex 3782 822463 10005": "amex <pan ****0005>",
    "4111111111111111110": "<pan ****1110>",  # 19 digits, Luhn-valid
    "4222222222222": "<pan ****2222>",  # 13 digits
    "12 4111 1111 1111 1111 99": "12 <pan ****1111> 99",  # next to other digits
    "C-4111111111111111-Z;CARD5555555555554444": "C-<pan ****1111>-Z;CARD<pan ****4444>",
    '{"number": "5555 5555 5555 4444"}': '{"number": "<pan ****4444>"}',
    "LOJA\n4111 1111 1111 1111\nNOVA": "LOJA\n<pan ****1111>\nNOVA",
    # not PAN-shaped: Luhn fails, too long, group too long, separators too wide, glued to letters, UUIDs
    "4111111111111112": None,
    "00004111111111111111": None,
    "411111 1111111111": None,
    "4111 -- 1111-1111-1111": None,
    "x4111-1111-1111-1111y": None,
    "12345678-1234-1234-1234-123456789012": None,
    "abcdef12-1234-5678-9012-3456abcdef12": None,
    "2026-11-26 14:03:22;1.234,56;BRL": None,
}


def test_python_masks_every_pan_shape_and_nothing_else():
    for text, masked in CASES.items():
        assert mask_pans(text) == (masked or text), text
        assert has_pan(text) == (masked is not None), text
    assert mask_pans(mask_pans("4111111111111111 and 5555-5555-5555-4444")) == "<pan ****1111> and <pan ****4444>"
    assert not any(has_pan(str(uuid.uuid4())) for _ in range(20000))


def test_ids_the_platform_stores_are_never_pan_shaped():
    """Rerun fingerprints, Delta commit nonces and request ids: in hex, about one in 230
    to 470 of them would hold a Luhn-valid digit run that a PAN scanner reports."""
    hex_ids = [uuid.UUID(int=random.Random(i).getrandbits(128)).hex for i in range(20000)]
    assert sum(map(has_pan, hex_ids)) > 10  # the risk is real in hex
    assert not any(has_pan(opaque_id()) for _ in range(20000))
    assert not any(has_pan(opaque_id(bytes([d]) * 32)) for d in range(256))  # digests of every byte value
    assert opaque_id(b"\x00" * 32) == "a" * 52


def corpus() -> list[str]:
    """The cases above plus random digit soup and Luhn-valid numbers in random groupings."""
    rnd = random.Random(7)
    texts = list(CASES)
    for _ in range(300):
        texts.append("".join(rnd.choice(["", " ", "-", " - ", ";", "a", ",", "--"])
                             + "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 9)))
                             for _ in range(rnd.randint(1, 8))))
    for _ in range(150):
        digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(12, 18)))
        digits += next(c for c in "0123456789" if luhn_valid(digits + c))
        size, sep = rnd.choice([3, 4, 5, 6, 7]), rnd.choice(["", " ", "-", " - "])
        grouped = sep.join(digits[i:i + size] for i in range(0, len(digits), size)) if sep else digits
        texts.append(rnd.choice(["", "x", "12 ", "9-", "_"]) + grouped + rnd.choice(["", "y", " 7", "-3", "\n"]))
    texts += [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(200)]
    return texts


def test_spark_sql_rendering_equals_python(spark):
    from pyspark.sql import functions as F

    texts = corpus()
    rows = (spark.createDataFrame([(t,) for t in texts], "t string")
            .select("t", mask_pans_sql(F.col("t")).alias("masked"), has_pan_sql(F.col("t")).alias("has"))
            .collect())
    assert len(rows) == len(texts)
    differ = [(r["t"], r["masked"], mask_pans(r["t"])) for r in rows
              if r["masked"] != mask_pans(r["t"]) or r["has"] != has_pan(r["t"])]
    assert not differ, differ[:5]
    assert sum(r["has"] for r in rows) > 100  # the corpus really holds PANs


@pytest.mark.parametrize("raw", [None, ""])
def test_spark_rendering_keeps_null_and_empty(spark, raw):
    from pyspark.sql import functions as F

    row = spark.createDataFrame([(raw,)], "t string").select(mask_pans_sql(F.col("t")).alias("m"),
                                                             has_pan_sql(F.col("t")).alias("h")).first()
    assert (row["m"], row["h"]) == (raw, False)


def test_error_messages_and_alerts_carry_no_card_number(capsys):
    """Where errors go on to be read: a stage's traceback and FLUXO_ERROR line, the
    error a failed task keeps for the run audit, the body of an alert (a webhook, read by people)."""
    from types import SimpleNamespace

    from fluxo.glue_runtime import ERROR_PREFIX, run_stage
    from fluxo_alerts.notifier import alert_body
    from fluxo_tasks.run import ERROR_KEY, remember_error

    def stage():
        raise ValueError("cannot parse record '4111-1111-1111-1111;C1'")

    with pytest.raises(SystemExit):
        run_stage(stage)
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ERROR_PREFIX + "ValueError: cannot parse record '<pan ****1111>;C1'"
    assert "ValueError: cannot parse record '<pan ****1111>;C1'" in err.splitlines()[-2] and not has_pan(err)

    pushed = {}
    ti = SimpleNamespace(task_id="extract.db", xcom_push=lambda key, value: pushed.update({key: value}))
    remember_error({"ti": ti, "exception": RuntimeError("row 5555 5555 5555 4444 refused")})
    assert pushed[ERROR_KEY]["message"] == "row <pan ****4444> refused"

    body = alert_body("run_failed", "critical", "card 4111111111111111", "first error: 4111 1111 1111 1111")
    assert (body["title"], body["text"]) == ("card <pan ****1111>", "first error: <pan ****1111>")
