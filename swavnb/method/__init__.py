"""SwAV itself: Sinkhorn-Knopp, the swapped-prediction loss, the network, the views, prototype
usage."""
