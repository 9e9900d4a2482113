"""TensorRT-LLM backend (NVIDIA GPUs): the LLM API's speculative_config, chosen by the installed version."""
