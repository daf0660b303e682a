"""Tribute model exporter: GGUF / Hugging Face safetensors -> ONNX model directory."""

__version__ = "0.1.0"
EXPORTER = f"tribute_export {__version__}"


class ExportError(Exception):
    """A user-facing error: printed without a traceback, exit status 1."""
