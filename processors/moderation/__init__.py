"""Content moderation: a post is checked four ways in parallel and published only if every check passes.

    moderation.in ─► toxicity (text) ───────────┐
                 ─► links (link reputation) ────┼─► decide ─► moderation.published   (every check passed)
                 ─► image (description safety) ─┤           └► moderation.held        (naming the failing checks)
                 ─► transcript (hate speech) ───┘
A check that cannot answer (it failed after its retries) holds the post: moderation fails closed.
"""
