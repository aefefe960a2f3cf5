"""What an encoder is worth: its features, label-fraction fine-tuning and linear probes, k-NN and
clusters, and the uncertainty of each accuracy."""
