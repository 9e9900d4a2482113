"""llama.cpp backend: its own server run in-process (xllamacpp) on GGUF weights, with its speculative methods."""
