"""swavnb: SwAV self-supervised learning on CIFAR-100, the package behind the study's notebooks."""

__version__ = "0.1.0"
