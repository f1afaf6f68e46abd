#!/usr/bin/env python3
"""Writes linear.onnx, the model models.slt scores with: score = 2·a + 3·b + 1.

A hand-built graph (MatMul, Add) with Vibelux's metadata: feature names and, for the `psi`
aggregate, a training reference for `a` (edges 0 and 10, a third of the rows in each bin).
Run it from this folder after changing it; the file is committed so the corpus needs no Python.
"""
import json

import onnx
from onnx import TensorProto, helper

weights = helper.make_tensor("w", TensorProto.FLOAT, [2, 1], [2.0, 3.0])
bias = helper.make_tensor("c", TensorProto.FLOAT, [1], [1.0])
graph = helper.make_graph(
    [helper.make_node("MatMul", ["X", "w"], ["xw"]), helper.make_node("Add", ["xw", "c"], ["score"])],
    "linear",
    [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
    [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1])],
    initializer=[weights, bias],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
reference = {"features": [{"name": "a", "edges": [0.0, 10.0], "expected": [1 / 3, 1 / 3, 1 / 3]}]}
for key, value in (("vibelux.features", json.dumps(["a", "b"])),
                   ("vibelux.reference", json.dumps(reference))):
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value
onnx.checker.check_model(model)
onnx.save(model, "linear.onnx")
