"""Recommendations: four recommenders answer in parallel; the most confident answer wins; when none is
confident enough a popularity recommender answers. The result names who answered and who failed and why.

    recommend.in ─► collaborative ─┐
                 ─► content ───────┼─► pick ─► popular (only when pick found no confident answer) ─► answer
                 ─► session ───────┤
                 ─► trending ──────┘                                       ─► recommend.results
"""
