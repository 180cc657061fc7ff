"""The closed-loop demo (``make demo``, ``ray-app demo``): every stage of the loop on embedded
defaults, each with its figures on a live console.

``config`` says what runs and where it writes, ``shipped`` points the repository's configs at the
demo's directory, ``stages`` are the steps, ``pipeline`` runs them in order (once, or on a
schedule until Ctrl-C), ``board`` is the live console and ``summary`` the closing report and the
checks ``--once`` exits by.
"""
