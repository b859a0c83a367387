import json

import pytest

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def iris(load):
    return load("iris-classifier")


def test_get_usage(iris, event, context):
    resp = iris.handle(event("GET"), context)
    assert resp["classes"] == ["setosa", "versicolor", "virginica"]
    assert resp["trainAccuracy"] > 0.9
    json.dumps(resp)  # serialisable


def test_predict_batch(iris, event, context):
    resp = iris.handle(
        event("POST", body={"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}), context
    )
    preds = resp["predictions"]
    assert [p["class"] for p in preds] == ["setosa", "virginica"]
    for p in preds:
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-3
        assert p["probabilities"][p["class"]] == max(p["probabilities"].values())
    json.dumps(resp)


def test_predict_single_row(iris, event, context):
    resp = iris.handle(event("POST", body={"features": [5.9, 3.0, 4.2, 1.5]}), context)
    assert resp["predictions"][0]["class"] == "versicolor"
    resp = iris.handle(event("POST", body=[[5.1, 3.5, 1.4, 0.2]]), context)  # bare list
    assert resp["predictions"][0]["class"] == "setosa"


@pytest.mark.parametrize(
    "payload",
    [
        "nope",
        "",
        "{}",
        '{"features": []}',
        '{"features": [[1, 2, 3]]}',
        '{"features": [["a", 2, 3, 4]]}',
        '{"features": [[true, 2, 3, 4]]}',
        '{"features": "1,2,3,4"}',
        '{"features": [[1, 2, 3, NaN]]}',
        "3",
    ],
)
def test_bad_input_is_400(iris, event, context, payload):
    resp = iris.handle(event("POST", body=payload), context)
    assert resp["statusCode"] == 400
    assert "error" in json.loads(resp["body"])


def test_too_many_rows(iris, event, context):
    rows = [[5.1, 3.5, 1.4, 0.2]] * (iris.MAX_ROWS + 1)
    assert iris.handle(event("POST", body={"features": rows}), context)["statusCode"] == 400


def test_wrong_method(iris, event, context):
    assert iris.handle(event("DELETE"), context)["statusCode"] == 405
