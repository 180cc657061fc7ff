"""Batch recommendations: from files (``ray-app recommend-batch``, :mod:`.files`) and for every
user of a registry version with Ray Data (``ray-app recommend-all``, :mod:`.all_users`).

Both write ``user_id, rank, item_id, score`` and share :mod:`.ranking`: users a model cannot
score, and the slots a model leaves empty, get the most popular unseen items with score NaN.
"""
