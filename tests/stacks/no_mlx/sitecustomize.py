"""The GPU stack's package set, emulated on this machine: requirements-gpu.txt has no mlx or mlx-lm. With this folder
on PYTHONPATH, every interpreter the tests start (pytest's and each `python main.py` it runs) finds neither:
importlib.util.find_spec returns None and `import mlx` raises ImportError. scripts/test.sh runs the fast lane's
MLX-independent tests (`-m "not slow and not needs_mlx"`) this way."""

import sys

for _name in ("mlx", "mlx_lm"):
    sys.modules[_name] = None
