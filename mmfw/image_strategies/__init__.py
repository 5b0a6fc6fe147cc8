"""Image strategies: a PIL image -> tiles of pixels, and tile features -> the image's token rows.

The contract is :class:`mmfw.image_strategies.base.ImageStrategy`, the single source of truth for how many tokens an
image becomes (``num_tokens``, ``max_tokens``); one file per strategy: ``resize``, ``pad``, ``anyres``.
"""
