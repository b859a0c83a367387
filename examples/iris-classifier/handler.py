"""Machine-learning inference: classify iris flowers with scikit-learn.

The model is trained once per replica, at import time (module level), on the iris data
set that ships inside scikit-learn (no network). Importing scikit-learn takes about a
second and training a few milliseconds; both are part of the cold start, never of a warm
call (a replica uses ~130 MB). A bigger model would be loaded the same way, once, e.g.
``joblib.load(Path(__file__).parent / "model.joblib")``.

    GET  /function/iris-classifier          usage
    POST /function/iris-classifier          {"features": [[5.1, 3.5, 1.4, 0.2], ...]}
                                            or {"features": [5.1, 3.5, 1.4, 0.2]}
"""

import json
import math
import time

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

_t0 = time.perf_counter()
_IRIS = load_iris()
MODEL = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
MODEL.fit(_IRIS.data, _IRIS.target)
CLASS_NAMES = [str(n) for n in _IRIS.target_names]
FEATURE_NAMES = [str(n) for n in _IRIS.feature_names]
TRAIN_ACCURACY = float(MODEL.score(_IRIS.data, _IRIS.target))
TRAIN_SECONDS = time.perf_counter() - _t0

MAX_ROWS = 1000

USAGE = {
    "usage": 'POST a JSON body {"features": [[sepal_length, sepal_width, petal_length, petal_width], ...]} (cm)',
    "example": {"features": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]},
    "features": FEATURE_NAMES,
    "classes": CLASS_NAMES,
    "model": "StandardScaler + LogisticRegression, trained on load_iris() at import",
    "trainAccuracy": round(TRAIN_ACCURACY, 4),
    "trainSeconds": round(TRAIN_SECONDS, 4),
    "maxRows": MAX_ROWS,
}


def _error(status, message):
    return {
        "statusCode": status,
        "body": json.dumps({"error": message, "usage": USAGE["usage"]}),
        "headers": {"content-type": "application/json"},
    }


def _rows(payload):
    """Validate the request and return a list of rows of 4 finite floats, or raise ValueError."""
    if isinstance(payload, dict):
        if "features" not in payload:
            raise ValueError('missing key "features"')
        features = payload["features"]
    else:
        features = payload  # a bare list is accepted too
    if not isinstance(features, list) or not features:
        raise ValueError('"features" must be a non-empty list')
    if all(isinstance(x, int | float) and not isinstance(x, bool) for x in features):
        features = [features]  # a single sample
    if len(features) > MAX_ROWS:
        raise ValueError(f"at most {MAX_ROWS} rows per request")
    rows = []
    for i, row in enumerate(features):
        if not isinstance(row, list) or len(row) != len(FEATURE_NAMES):
            raise ValueError(f"row {i} must be a list of {len(FEATURE_NAMES)} numbers")
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in row):
            raise ValueError(f"row {i} must contain only numbers")
        if not all(math.isfinite(x) for x in row):
            raise ValueError(f"row {i} contains a non-finite number")
        rows.append([float(x) for x in row])
    return rows


def handle(event, context):
    method = (event.method or "GET").upper()
    if method == "GET":
        return USAGE
    if method != "POST":
        return _error(405, f"{method} not allowed; use GET or POST")
    try:
        payload = json.loads(event.body or b"")
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body is not valid JSON")
    try:
        rows = _rows(payload)
    except ValueError as exc:
        return _error(400, str(exc))

    probabilities = MODEL.predict_proba(rows)
    predictions = []
    for probs in probabilities:
        best = int(probs.argmax())
        predictions.append(
            {
                "class": CLASS_NAMES[best],
                "classIndex": best,
                "probabilities": {
                    name: round(float(p), 6) for name, p in zip(CLASS_NAMES, probs, strict=True)
                },
            }
        )
    return {"predictions": predictions, "model": "iris-logreg"}
