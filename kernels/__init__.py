"""Triton kernels of actrack_fast, one module per op (``kernels/<op>.py``: kernels and launchers).

The ``nn.Module`` wrappers that call them live in ``actrack_fast``; the backend choice lives in
``actrack_fast.backend``.
"""
