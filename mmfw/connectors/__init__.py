"""Connectors: vision features ``(N, L, in_dim)`` -> LLM-space tokens ``(N, T, out_dim)``.

The contract is :class:`mmfw.connectors.base.Connector` (``num_tokens(grid)`` and ``output_grid(grid)`` give the
image strategy the token count and layout); one file per connector: ``mlp``, ``linear``, ``identity``, ``resampler``,
``patch-merger``.
"""
