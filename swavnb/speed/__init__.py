"""Speed: our training step against the usual pipeline, and the loss curves of both."""
