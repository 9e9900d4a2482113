"""mlx-lm backend: draft-model speculative decoding on Apple silicon (Metal) or, with mlx[cpu], any CPU."""
