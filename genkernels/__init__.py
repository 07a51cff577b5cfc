"""Triton kernels of genmodels, one module per op (imported lazily by genmodels.ops).

Triton decides at decoration time whether it interprets, so set TRITON_INTERPRET=1
before importing these modules to run them on CPU tensors.
"""
