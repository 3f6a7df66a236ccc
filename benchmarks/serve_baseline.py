"""The obvious hand-written FastAPI endpoint that `benchmarks/serve.py` measures against.

    python benchmarks/serve_baseline.py RUN_DIR PORT

One `POST /predict` that calls the model once per request: a plain `def` endpoint (FastAPI
runs it on its thread pool), `run.predict` on the request's inputs, the class and the
probabilities back. No batching across requests, nothing else.
"""

from __future__ import annotations

import sys

import numpy as np
import uvicorn
from fastapi import FastAPI

import torchloom as tl

run = tl.load_run(sys.argv[1], data=False)
classes = run.preprocess.classes or []
app = FastAPI()


@app.post("/predict")
def predict(body: dict) -> dict:
    predictions = run.predict(np.asarray(body["inputs"], dtype=np.float32))
    return {
        "predictions": [
            {
                "class": classes[int(index)],
                "probabilities": dict(zip(classes, map(float, row), strict=True)),
            }
            for index, row in zip(predictions["class"], predictions["probabilities"], strict=True)
        ]
    }


if __name__ == "__main__":
    print("listening", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
