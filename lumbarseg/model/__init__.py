"""The model file: ONNX graph plus lumbarseg metadata (the contract between engines)."""
