"""Deployment: quantization, ONNX / TensorRT export and benchmarks."""
