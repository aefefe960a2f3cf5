"""CIFAR-100 as uint8 tensors: loading, stratified subsets, batch orders."""
