#!/usr/bin/env python3
"""Train a small anomaly model on the simulated facility and export it for Vibelux.

    python3 models/iforest/train.py train --vibelux target/release/vibelux --out models/iforest/model
    python3 models/iforest/train.py score --model models/iforest/model --input rows.csv

`train` runs the simulator through Vibelux (a day of readings from a 2-room facility, written as
CSV), fits scikit-learn's IsolationForest on (temp_c, rh, co2_ppm) and exports it with skl2onnx
as `model.onnx`, beside the fitted estimator (`model.pkl`) and its training rows. The ONNX file
carries two metadata entries Vibelux reads: `vibelux.features` (the feature names, in input
order) and `vibelux.reference` (each feature's training deciles and the share of rows between
them, for the `psi` drift aggregate).

Two exports give the same scores (`decision_function`):
- `--export compact` (the default) stores each leaf's path length (its depth plus the expected
  depth of the samples it still held) as the leaf value of a regression forest, which skl2onnx
  exports as one TreeEnsembleRegressor; four arithmetic nodes turn the mean path length into the
  score. 7 nodes, so a call costs microseconds.
- `--export skl2onnx` is skl2onnx's own IsolationForest converter: ~27 nodes per tree (1,360 for
  50 trees), which makes each call cost most of a millisecond whatever the batch.

`score` prints scikit-learn's own `decision_function` for the rows of a CSV or JSON-lines file
(the feature columns by name), one per line: what the exported model must reproduce.

Needs scikit-learn, skl2onnx and onnx (the test script installs them).
"""
import argparse
import csv
import json
import os
import pickle
import subprocess
import sys

import numpy as np

FEATURES = ["temp_c", "rh", "co2_ppm"]

PIPELINE = """
CREATE SOURCE readings (
  sensor_id TEXT NOT NULL, room TEXT, zone TEXT, ts TIMESTAMP,
  temp_c DOUBLE, rh DOUBLE, co2_ppm DOUBLE,
  WATERMARK FOR ts AS ts - INTERVAL '5 seconds'
) WITH (connector = 'simulator', rooms = '2', zones_per_room = '2', sensors_per_zone = '2',
        interval = '1 minute', speed = 'max', duration = '{duration}', seed = '{seed}');
CREATE VIEW training AS
  SELECT ts, temp_c, rh, co2_ppm FROM readings
  WHERE temp_c IS NOT NULL AND rh IS NOT NULL AND co2_ppm IS NOT NULL;
CREATE SINK training_rows FROM training WITH (connector = 'file', path = '{path}');
"""


def read_features(path):
    with open(path, newline="") as handle:
        if path.endswith(".jsonl"):
            rows = [json.loads(line) for line in handle if line.strip()]
        else:
            rows = list(csv.DictReader(handle))
    if not rows:
        sys.exit(f"{path}: no rows")
    missing = [name for name in FEATURES if name not in rows[0]]
    if missing:
        sys.exit(f"{path}: no column {', '.join(missing)}")
    return np.array([[float(row[name]) for name in FEATURES] for row in rows], dtype=np.float64)


def simulate(vibelux, out, duration, seed):
    rows = os.path.join(out, "training.csv")
    pipeline = os.path.join(out, "training.sql")
    if os.path.exists(rows):
        os.remove(rows)
    with open(pipeline, "w") as handle:
        handle.write(PIPELINE.format(duration=duration, seed=seed, path=rows))
    subprocess.run([vibelux, "run", pipeline, "--http", "off", "--no-state"], check=True,
                   stdout=subprocess.DEVNULL)
    return rows


def reference(x):
    """Each feature's deciles over the training rows, and the share of rows in each bin."""
    features = []
    for index, name in enumerate(FEATURES):
        column = x[:, index]
        edges = sorted(set(np.quantile(column, np.linspace(0.1, 0.9, 9)).tolist()))
        # The same rule as Vibelux: a value equal to an edge belongs to the bin above it.
        bins = np.searchsorted(np.array(edges), column, side="right")
        counts = np.bincount(bins, minlength=len(edges) + 1)
        features.append({"name": name, "edges": edges,
                         "expected": (counts / counts.sum()).tolist()})
    return {"features": features}


def compact_forest(model):
    """The IsolationForest as a regression forest whose mean prediction is the mean path length."""
    import copy

    from sklearn.ensemble import ExtraTreesRegressor
    from sklearn.ensemble._iforest import _average_path_length

    if model._max_features != len(FEATURES):
        sys.exit("the compact export needs every tree to see every feature (max_features=1.0)")
    trees = []
    for estimator in model.estimators_:
        tree = copy.deepcopy(estimator)
        nodes = tree.tree_
        depth = np.zeros(nodes.node_count)
        for node in range(nodes.node_count):  # children come after their parent
            for child in (nodes.children_left[node], nodes.children_right[node]):
                if child != -1:
                    depth[child] = depth[node] + 1
        leaves = nodes.children_left == -1
        path = depth + _average_path_length(nodes.n_node_samples)
        nodes.value[leaves, 0, 0] = path[leaves]
        trees.append(tree)
    forest = ExtraTreesRegressor(n_estimators=len(trees))
    forest.estimators_, forest.estimator_ = trees, trees[0]
    forest.n_outputs_, forest.n_features_in_ = 1, len(FEATURES)
    return forest, float(_average_path_length([model.max_samples_])[0])


def export(model, how):
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    inputs = [("X", FloatTensorType([None, len(FEATURES)]))]
    opsets = {"": 17, "ai.onnx.ml": 3}
    if how == "skl2onnx":
        return convert_sklearn(model, "iforest", initial_types=inputs, target_opset=opsets)
    forest, expected_path = compact_forest(model)
    onnx_model = convert_sklearn(forest, "iforest", initial_types=inputs, target_opset=opsets)
    graph = onnx_model.graph
    mean_path = graph.output[0].name
    # decision_function = −2^(−mean path / expected path) − offset
    constants = {"expected_path": expected_path, "two": 2.0, "offset": float(model.offset_)}
    for name, value in constants.items():
        graph.initializer.append(helper.make_tensor(name, TensorProto.FLOAT, [], [value]))
    graph.node.extend([
        helper.make_node("Div", [mean_path, "expected_path"], ["relative_path"]),
        helper.make_node("Neg", ["relative_path"], ["exponent"]),
        helper.make_node("Pow", ["two", "exponent"], ["normality"]),
        helper.make_node("Neg", ["normality"], ["score_samples"]),
        helper.make_node("Sub", ["score_samples", "offset"], ["scores"]),
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 1]))
    return onnx_model


def train(args):
    from sklearn.ensemble import IsolationForest

    os.makedirs(args.out, exist_ok=True)
    rows = simulate(args.vibelux, args.out, args.duration, args.seed)
    x = read_features(rows)
    model = IsolationForest(n_estimators=args.trees, random_state=0).fit(x)
    onnx_model = export(model, args.export)
    for key, value in (("vibelux.features", json.dumps(FEATURES)),
                       ("vibelux.reference", json.dumps(reference(x)))):
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx_model.model_version = args.version
    with open(os.path.join(args.out, "model.onnx"), "wb") as handle:
        handle.write(onnx_model.SerializeToString())
    with open(os.path.join(args.out, "model.pkl"), "wb") as handle:
        pickle.dump(model, handle)
    print(f"trained on {len(x)} rows; wrote {os.path.join(args.out, 'model.onnx')}")


def score(args):
    with open(os.path.join(args.model, "model.pkl"), "rb") as handle:
        model = pickle.load(handle)
    for value in model.decision_function(read_features(args.input)):
        print(f"{value:.9g}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    trainer = commands.add_parser("train", help="simulate, fit and export")
    trainer.add_argument("--vibelux", required=True, help="the vibelux binary")
    trainer.add_argument("--out", required=True, help="folder for model.onnx and model.pkl")
    trainer.add_argument("--duration", default="1d", help="simulated time to train on")
    trainer.add_argument("--seed", default="11")
    trainer.add_argument("--trees", type=int, default=50)
    trainer.add_argument("--version", type=int, default=1)
    trainer.add_argument("--export", choices=["compact", "skl2onnx"], default="compact",
                         help="compact: one tree-ensemble node; skl2onnx: its own converter")
    scorer = commands.add_parser("score", help="scikit-learn's scores for a CSV's rows")
    scorer.add_argument("--model", required=True)
    scorer.add_argument("--input", required=True)
    args = parser.parse_args()
    train(args) if args.command == "train" else score(args)


if __name__ == "__main__":
    main()
