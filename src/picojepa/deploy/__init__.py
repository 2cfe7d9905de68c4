"""To the edge: ONNX export of members and whole ensembles, ONNX Runtime inference, int8, streaming."""
