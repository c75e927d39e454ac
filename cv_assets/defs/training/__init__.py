"""Training, evaluation against the champion, the blessing gate and the model registry."""
