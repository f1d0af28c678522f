"""dd3g-sdk export: PEPD checkpoints to ONNX (fp32/fp16) and TensorRT engines."""
